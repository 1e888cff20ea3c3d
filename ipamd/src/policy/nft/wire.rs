//! The nf_tables wire format: constants from `linux/netfilter/nf_tables.h`
//! and `nfnetlink.h`, an attribute writer, and the nfnetlink message type
//! that netlink-packet-core frames. Every integer attribute of nf_tables is
//! big-endian (`NLA_BE32`); strings carry their NUL.

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkSerializable, NlaBuffer, NlasIterator,
};

/// `NFNL_SUBSYS_NFTABLES`.
pub const SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` (`NLMSG_MIN_TYPE`).
pub const MSG_BATCH_BEGIN: u16 = 0x10;
/// `NFNL_MSG_BATCH_END`.
pub const MSG_BATCH_END: u16 = 0x11;
/// `NFPROTO_INET`: a table for IPv4 and IPv6.
pub const NFPROTO_INET: u8 = 1;
/// `AF_UNSPEC`, the family of batch delimiters.
pub const AF_UNSPEC: u8 = 0;

/// `enum nf_tables_msg_types` (the ones we send or read).
#[allow(missing_docs)]
pub mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const GETTABLE: u16 = 1;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const DELSET: u16 = 11;
    pub const NEWSETELEM: u16 = 12;
    pub const DELSETELEM: u16 = 14;
}

/// Attribute numbers, one module per nested namespace.
#[allow(missing_docs)]
pub mod attr {
    pub const NLA_F_NESTED: u16 = 0x8000;
    pub mod table {
        pub const NAME: u16 = 1;
        pub const FLAGS: u16 = 2;
    }
    pub mod chain {
        pub const TABLE: u16 = 1;
        pub const NAME: u16 = 3;
        pub const HOOK: u16 = 4;
        pub const POLICY: u16 = 5;
        pub const TYPE: u16 = 7;
    }
    pub mod hook {
        pub const HOOKNUM: u16 = 1;
        pub const PRIORITY: u16 = 2;
    }
    pub mod rule {
        pub const TABLE: u16 = 1;
        pub const CHAIN: u16 = 2;
        pub const EXPRESSIONS: u16 = 4;
    }
    pub mod list {
        pub const ELEM: u16 = 1;
    }
    pub mod expr {
        pub const NAME: u16 = 1;
        pub const DATA: u16 = 2;
    }
    pub mod set {
        pub const TABLE: u16 = 1;
        pub const NAME: u16 = 2;
        pub const FLAGS: u16 = 3;
        pub const KEY_TYPE: u16 = 4;
        pub const KEY_LEN: u16 = 5;
        pub const DATA_TYPE: u16 = 6;
        pub const DATA_LEN: u16 = 7;
        pub const DESC: u16 = 9;
        pub const ID: u16 = 10;
        pub const USERDATA: u16 = 13;
    }
    pub mod set_desc {
        pub const CONCAT: u16 = 2;
    }
    pub mod set_field {
        pub const LEN: u16 = 1;
    }
    pub mod elem_list {
        pub const TABLE: u16 = 1;
        pub const SET: u16 = 2;
        pub const ELEMENTS: u16 = 3;
    }
    pub mod elem {
        pub const KEY: u16 = 1;
        pub const DATA: u16 = 2;
        pub const KEY_END: u16 = 10;
    }
    pub mod data {
        pub const VALUE: u16 = 1;
        pub const VERDICT: u16 = 2;
    }
    pub mod verdict {
        pub const CODE: u16 = 1;
        pub const CHAIN: u16 = 2;
    }
    pub mod immediate {
        pub const DREG: u16 = 1;
        pub const DATA: u16 = 2;
    }
    pub mod cmp {
        pub const SREG: u16 = 1;
        pub const OP: u16 = 2;
        pub const DATA: u16 = 3;
    }
    pub mod bitwise {
        pub const SREG: u16 = 1;
        pub const DREG: u16 = 2;
        pub const LEN: u16 = 3;
        pub const MASK: u16 = 4;
        pub const XOR: u16 = 5;
    }
    pub mod lookup {
        pub const SET: u16 = 1;
        pub const SREG: u16 = 2;
        pub const DREG: u16 = 3;
    }
    pub mod payload {
        pub const DREG: u16 = 1;
        pub const BASE: u16 = 2;
        pub const OFFSET: u16 = 3;
        pub const LEN: u16 = 4;
    }
    pub mod meta {
        pub const DREG: u16 = 1;
        pub const KEY: u16 = 2;
    }
    pub mod ct {
        pub const DREG: u16 = 1;
        pub const KEY: u16 = 2;
    }
}

/// `enum nft_set_flags`.
pub mod set_flags {
    /// Elements are ranges.
    pub const INTERVAL: u32 = 0x4;
    /// Elements carry data (a map).
    pub const MAP: u32 = 0x8;
    /// The key is a concatenation of fields.
    pub const CONCAT: u32 = 0x80;
}

/// `NFT_DATA_VERDICT`: the data type of a verdict map.
pub const DATA_VERDICT: u32 = 0xffff_ff00;

/// Registers: `NFT_REG_VERDICT`, `NFT_REG_1` (16 bytes) and the 32-bit
/// registers `NFT_REG32_00`.. that concatenations are built in.
pub mod reg {
    /// The verdict register (a vmap lookup writes here).
    pub const VERDICT: u32 = 0;
    /// The first 16-byte register.
    pub const R1: u32 = 1;
    /// `NFT_REG32_00`; field `n` of a concatenation goes to `R32_00 + n`
    /// when every field fits in four bytes.
    pub const R32_00: u32 = 8;
}

/// Netfilter and nf_tables verdict codes.
pub mod verdict {
    /// `NF_DROP`.
    pub const DROP: i32 = 0;
    /// `NF_ACCEPT`.
    pub const ACCEPT: i32 = 1;
    /// `NFT_JUMP`.
    pub const JUMP: i32 = -3;
    /// `NFT_RETURN`.
    pub const RETURN: i32 = -5;
}

/// Attribute writer. Attributes are appended in place; a nest is written
/// with a placeholder length that is patched when its closure returns.
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    buf: Vec<u8>,
}

impl Attrs {
    /// An empty attribute list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A raw attribute.
    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + value.len()).expect("an attribute fits in 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    /// Attributes encoded elsewhere, copied as they are.
    pub fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        debug_assert_eq!(encoded.len() % 4, 0, "encoded attributes are padded");
        self.buf.extend_from_slice(encoded);
        self
    }

    /// A big-endian u32 attribute.
    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.bytes(kind, &v)
    }

    /// A nested attribute whose content `f` writes.
    pub fn nest(&mut self, kind: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | attr::NLA_F_NESTED).to_ne_bytes());
        f(self);
        let len = u16::try_from(self.buf.len() - start).expect("a nest fits in 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// One nfnetlink message: `struct nfgenmsg` and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfMsg {
    /// The full netlink type: `(subsystem << 8) | message` (or a batch delimiter).
    pub msg_type: u16,
    /// `nfgen_family`.
    pub family: u8,
    /// `res_id` (the subsystem, for batch delimiters).
    pub res_id: u16,
    /// Encoded attributes.
    pub attrs: Vec<u8>,
}

impl NfMsg {
    /// An nf_tables message of type `msg` for `family`.
    pub fn nftables(msg: u16, family: u8, attrs: Attrs) -> Self {
        Self {
            msg_type: (SUBSYS_NFTABLES << 8) | msg,
            family,
            res_id: 0,
            attrs: attrs.into_bytes(),
        }
    }

    /// A batch delimiter for the nf_tables subsystem.
    pub fn batch(delimiter: u16) -> Self {
        Self {
            msg_type: delimiter,
            family: AF_UNSPEC,
            res_id: SUBSYS_NFTABLES,
            attrs: Vec::new(),
        }
    }

    /// The nf_tables message number (`msg_type & 0xff`).
    pub fn nft_type(&self) -> u16 {
        self.msg_type & 0xff
    }

    /// The top-level attributes.
    pub fn parse_attrs(&self) -> Result<Vec<Attr>, DecodeError> {
        parse(&self.attrs)
    }
}

impl NetlinkSerializable for NfMsg {
    fn message_type(&self) -> u16 {
        self.msg_type
    }

    fn buffer_len(&self) -> usize {
        4 + self.attrs.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = 0; // NFNETLINK_V0
        buffer[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        buffer[4..].copy_from_slice(&self.attrs);
    }
}

/// A message the kernel sent that is not an nfnetlink message.
#[derive(Debug, thiserror::Error)]
#[error("nfnetlink message of {0} bytes is shorter than its header")]
pub struct ShortMessage(usize);

impl NetlinkDeserializable for NfMsg {
    type Error = ShortMessage;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        if payload.len() < 4 {
            return Err(ShortMessage(payload.len()));
        }
        Ok(Self {
            msg_type: header.message_type,
            family: payload[0],
            res_id: u16::from_be_bytes([payload[2], payload[3]]),
            attrs: payload[4..].to_vec(),
        })
    }
}

/// A decoded attribute: its number (flags stripped), whether it was marked
/// nested, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Attribute number.
    pub kind: u16,
    /// `NLA_F_NESTED` was set.
    pub nested: bool,
    /// The value, without padding.
    pub value: Vec<u8>,
}

/// Malformed attributes.
#[derive(Debug, thiserror::Error)]
#[error("malformed netlink attributes: {0}")]
pub struct DecodeError(String);

impl Attr {
    /// The attributes nested inside this one.
    pub fn children(&self) -> Result<Vec<Attr>, DecodeError> {
        parse(&self.value)
    }

    /// The value as a big-endian u32.
    pub fn as_u32(&self) -> Result<u32, DecodeError> {
        let b: [u8; 4] = self
            .value
            .as_slice()
            .try_into()
            .map_err(|_| DecodeError(format!("u32 attribute of {} bytes", self.value.len())))?;
        Ok(u32::from_be_bytes(b))
    }

    /// The value as a string (up to its NUL).
    pub fn as_str(&self) -> Result<&str, DecodeError> {
        let end = self
            .value
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.value.len());
        std::str::from_utf8(&self.value[..end]).map_err(|e| DecodeError(e.to_string()))
    }
}

/// Decodes a run of attributes with netlink-packet-core's iterator.
pub fn parse(bytes: &[u8]) -> Result<Vec<Attr>, DecodeError> {
    NlasIterator::new(bytes)
        .map(|nla| {
            let nla: NlaBuffer<&[u8]> = nla.map_err(|e| DecodeError(e.to_string()))?;
            Ok(Attr {
                kind: nla.kind(),
                nested: nla.nested_flag(),
                value: nla.value().to_vec(),
            })
        })
        .collect()
}

/// The first attribute of `kind` in `attrs`.
pub fn find(attrs: &[Attr], kind: u16) -> Option<&Attr> {
    attrs.iter().find(|a| a.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_patched() {
        let mut a = Attrs::new();
        a.str(1, "ab").nest(2, |n| {
            n.u32(3, 0x0102_0304);
        });
        let bytes = a.into_bytes();
        // "ab\0" is 4+3 = 7 bytes, padded to 8; the nest is 4 + 8.
        assert_eq!(bytes.len(), 8 + 12);
        assert_eq!(&bytes[0..2], &7u16.to_ne_bytes());
        assert_eq!(&bytes[8..10], &12u16.to_ne_bytes());
        assert_eq!(&bytes[10..12], &(2u16 | attr::NLA_F_NESTED).to_ne_bytes());
        assert_eq!(&bytes[16..20], &[1, 2, 3, 4], "big-endian");
        let top = parse(&bytes).unwrap();
        assert_eq!(top[0].as_str().unwrap(), "ab");
        assert!(top[1].nested);
        assert_eq!(top[1].children().unwrap()[0].as_u32().unwrap(), 0x0102_0304);
    }

    #[test]
    fn message_round_trips_through_netlink_packet_core() {
        use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
        let mut a = Attrs::new();
        a.str(attr::table::NAME, "t");
        let msg = NfMsg::nftables(msg::NEWTABLE, NFPROTO_INET, a);
        let mut nl = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(msg.clone()),
        );
        nl.finalize();
        let mut buf = vec![0; nl.buffer_len()];
        nl.serialize(&mut buf);
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 10 << 8);
        let back = NetlinkMessage::<NfMsg>::deserialize(&buf).unwrap();
        let NetlinkPayload::InnerMessage(inner) = back.payload else {
            panic!("not an inner message")
        };
        assert_eq!(inner, msg);
        assert_eq!(inner.nft_type(), msg::NEWTABLE);
    }
}
