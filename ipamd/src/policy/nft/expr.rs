//! Rule expressions: the handful of nf_tables VM instructions the policy
//! compiler needs (meta, payload, cmp, bitwise, ct, lookup, immediate).

use super::wire::{attr, reg, verdict, Attrs};

/// `enum nft_meta_keys` (the ones we read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// `meta iifname`: 16 bytes, NUL-padded.
    IifName = 6,
    /// `meta oifname`.
    OifName = 7,
    /// `meta nfproto`: 1 byte (`NFPROTO_IPV4` = 2).
    NfProto = 15,
    /// `meta l4proto`: 1 byte.
    L4Proto = 16,
}

/// `enum nft_payload_bases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    /// The IP header.
    Network = 1,
    /// The transport header.
    Transport = 2,
}

/// `enum nft_cmp_ops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`.
    Eq = 0,
    /// `!=`.
    Neq = 1,
}

/// A verdict, as the data of an immediate or of a verdict-map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `jump <chain>`.
    Jump(String),
}

impl Verdict {
    /// Writes `NFTA_DATA_VERDICT` into a data nest.
    pub fn encode(&self, a: &mut Attrs) {
        a.nest(attr::data::VERDICT, |v| {
            let code = match self {
                Verdict::Accept => verdict::ACCEPT,
                Verdict::Drop => verdict::DROP,
                Verdict::Return => verdict::RETURN,
                Verdict::Jump(_) => verdict::JUMP,
            };
            v.u32(attr::verdict::CODE, code as u32);
            if let Verdict::Jump(chain) = self {
                v.str(attr::verdict::CHAIN, chain);
            }
        });
    }
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Loads packet metadata into `dreg`.
    Meta {
        /// What to load.
        key: MetaKey,
        /// Destination register.
        dreg: u32,
    },
    /// Loads `len` bytes at `offset` of a header into `dreg`.
    Payload {
        /// Which header.
        base: PayloadBase,
        /// Byte offset in it.
        offset: u32,
        /// How many bytes.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// Compares `sreg` with `data`; the rule stops here if false.
    Cmp {
        /// Source register.
        sreg: u32,
        /// Operator.
        op: CmpOp,
        /// Value (register byte order).
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        /// Source register.
        sreg: u32,
        /// Destination register.
        dreg: u32,
        /// AND mask.
        mask: Vec<u8>,
        /// XOR value (same length).
        xor: Vec<u8>,
    },
    /// Loads the conntrack state bits (`ct state`) into `dreg`.
    CtState {
        /// Destination register.
        dreg: u32,
    },
    /// Looks the key in `sreg`.. up in a named set; with `dreg`
    /// (`reg::VERDICT` for a verdict map) the element's data is loaded.
    Lookup {
        /// Set name.
        set: String,
        /// First register of the key.
        sreg: u32,
        /// Where the data goes (maps only).
        dreg: Option<u32>,
    },
    /// Sets the verdict.
    Immediate(Verdict),
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::CtState { .. } => "ct",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate(_) => "immediate",
        }
    }

    /// Writes one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn encode(&self, list: &mut Attrs) {
        list.nest(attr::list::ELEM, |e| {
            e.str(attr::expr::NAME, self.name());
            e.nest(attr::expr::DATA, |d| self.encode_data(d));
        });
    }

    fn encode_data(&self, d: &mut Attrs) {
        match self {
            Expr::Meta { key, dreg } => {
                d.u32(attr::meta::KEY, *key as u32)
                    .u32(attr::meta::DREG, *dreg);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                d.u32(attr::payload::DREG, *dreg)
                    .u32(attr::payload::BASE, *base as u32)
                    .u32(attr::payload::OFFSET, *offset)
                    .u32(attr::payload::LEN, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                d.u32(attr::cmp::SREG, *sreg)
                    .u32(attr::cmp::OP, *op as u32)
                    .nest(attr::cmp::DATA, |v| {
                        v.bytes(attr::data::VALUE, data);
                    });
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                d.u32(attr::bitwise::SREG, *sreg)
                    .u32(attr::bitwise::DREG, *dreg)
                    .u32(attr::bitwise::LEN, mask.len() as u32)
                    .nest(attr::bitwise::MASK, |v| {
                        v.bytes(attr::data::VALUE, mask);
                    })
                    .nest(attr::bitwise::XOR, |v| {
                        v.bytes(attr::data::VALUE, xor);
                    });
            }
            Expr::CtState { dreg } => {
                // NFT_CT_STATE is key 0.
                d.u32(attr::ct::DREG, *dreg).u32(attr::ct::KEY, 0);
            }
            Expr::Lookup { set, sreg, dreg } => {
                d.str(attr::lookup::SET, set).u32(attr::lookup::SREG, *sreg);
                if let Some(dreg) = dreg {
                    d.u32(attr::lookup::DREG, *dreg);
                }
            }
            Expr::Immediate(v) => {
                d.u32(attr::immediate::DREG, reg::VERDICT)
                    .nest(attr::immediate::DATA, |data| v.encode(data));
            }
        }
    }
}

/// `NFPROTO_IPV4`, as `meta nfproto` loads it.
pub const NFPROTO_IPV4: u8 = 2;
/// `ct state` bits: established (`1 << IP_CT_ESTABLISHED`) and related.
pub const CT_ESTABLISHED_RELATED: u32 = 0x2 | 0x4;

/// `ct state established,related`: true when any of the two bits is set.
pub fn ct_established_or_related() -> Vec<Expr> {
    vec![
        Expr::CtState { dreg: reg::R1 },
        Expr::Bitwise {
            sreg: reg::R1,
            dreg: reg::R1,
            mask: CT_ESTABLISHED_RELATED.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: reg::R1,
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

/// `meta nfproto ipv4`: the dependency an inet table needs before reading
/// IPv4 header fields.
pub fn is_ipv4() -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::NfProto,
            dreg: reg::R1,
        },
        Expr::Cmp {
            sreg: reg::R1,
            op: CmpOp::Eq,
            data: vec![NFPROTO_IPV4],
        },
    ]
}

/// Which IPv4 address a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrField {
    /// `ip saddr` (offset 12).
    Source,
    /// `ip daddr` (offset 16).
    Destination,
}

/// Loads `ip saddr|daddr` into `dreg`.
pub fn ip_addr(field: AddrField, dreg: u32) -> Expr {
    Expr::Payload {
        base: PayloadBase::Network,
        offset: match field {
            AddrField::Source => 12,
            AddrField::Destination => 16,
        },
        len: 4,
        dreg,
    }
}

/// Loads `th dport` (bytes 2–3 of the transport header) into `dreg`.
pub fn th_dport(dreg: u32) -> Expr {
    Expr::Payload {
        base: PayloadBase::Transport,
        offset: 2,
        len: 2,
        dreg,
    }
}
