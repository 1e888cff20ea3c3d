//! Rule expressions: the nf_tables VM instructions vpc-cni uses. meta,
//! payload, cmp, bitwise, lookup and immediate are netlink-packet-netfilter's
//! types; `ct`, `fib` and `nat`, which it does not have, are encoded here
//! (each a few big-endian u32 attributes, from `linux/netfilter/nf_tables.h`).

use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute,
    Lookup, Meta, Operator, Payload, Register, Verdict as NfVerdict, VerdictAttribute,
};

use super::reg;

/// `enum nft_meta_keys` (the ones we read or set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// `meta mark`: the packet mark, a host-endian u32.
    Mark = 3,
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

/// `NF_DROP`, `NF_ACCEPT`: netfilter verdicts, which netlink-packet-netfilter
/// spells as "other" codes.
const NF_DROP: u32 = 0;
pub(crate) const NF_ACCEPT: u32 = 1;

impl Verdict {
    /// `NFTA_DATA_VERDICT`'s content.
    pub(crate) fn data(&self) -> DataAttribute {
        let code = match self {
            Verdict::Accept => NfVerdict::Other(NF_ACCEPT),
            Verdict::Drop => NfVerdict::Other(NF_DROP),
            Verdict::Return => NfVerdict::Return,
            Verdict::Jump(_) => NfVerdict::Jump,
        };
        let mut v = vec![VerdictAttribute::Code(code)];
        if let Verdict::Jump(chain) = self {
            v.push(VerdictAttribute::Chain(chain.clone()));
        }
        DataAttribute::Verdict(v)
    }
}

/// What `fib` looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FibResult {
    /// `type`: the address type (`RTN_*`, a host-endian u32).
    AddrType = 3,
}

/// `NFTA_FIB_F_DADDR`: look the destination address up.
pub const FIB_F_DADDR: u32 = 1 << 1;
/// `RTN_LOCAL`: an address of this host.
pub const RTN_LOCAL: u32 = 2;
/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY`: `snat ... fully-random`.
pub const NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;
/// `NFPROTO_IPV4`, as `meta nfproto` loads it and `nat` takes it.
pub const NFPROTO_IPV4: u8 = 2;

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
    /// Sets packet metadata from `sreg` (`meta mark set ...`).
    MetaSet {
        /// What to set.
        key: MetaKey,
        /// Source register.
        sreg: u32,
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
    /// The key in `sreg` is *not* in the named set (`!= @set`).
    NotInSet {
        /// Set name.
        set: String,
        /// First register of the key.
        sreg: u32,
    },
    /// Sets the verdict.
    Immediate(Verdict),
    /// Loads a constant into a data register (`snat to <addr>` loads the
    /// address this way).
    ImmediateData {
        /// Destination register.
        dreg: u32,
        /// The constant (register byte order).
        data: Vec<u8>,
    },
    /// Looks the packet up in the routing table (`fib daddr type`).
    Fib {
        /// `NFTA_FIB_F_*`: which address, which interface.
        flags: u32,
        /// What to load.
        result: FibResult,
        /// Destination register.
        dreg: u32,
    },
    /// Source NAT of IPv4 to the address in `addr_reg` (`snat ip to ...`).
    Snat {
        /// Register holding the address.
        addr_reg: u32,
        /// `NF_NAT_RANGE_*` flags.
        flags: u32,
    },
}

/// `NFTA_LOOKUP_F_INV`.
const LOOKUP_F_INV: u32 = 1;

/// Attribute numbers of the expressions netlink-packet-netfilter lacks.
mod hand {
    pub mod ct {
        pub const DREG: u16 = 1;
        pub const KEY: u16 = 2;
        /// `NFT_CT_STATE`.
        pub const KEY_STATE: u32 = 0;
    }
    pub mod fib {
        pub const DREG: u16 = 1;
        pub const RESULT: u16 = 2;
        pub const FLAGS: u16 = 3;
    }
    pub mod nat {
        pub const TYPE: u16 = 1;
        pub const FAMILY: u16 = 2;
        pub const REG_ADDR_MIN: u16 = 3;
        pub const FLAGS: u16 = 7;
        /// `NFT_NAT_SNAT`.
        pub const TYPE_SNAT: u32 = 0;
    }
}

fn be32(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

fn other(name: &str, attributes: Vec<DefaultNla>) -> Expressions {
    Expressions::Other {
        expression_type: name.to_string(),
        attributes,
    }
}

impl Expr {
    /// One `NFTA_LIST_ELEM` of a rule's expression list.
    pub(crate) fn to_list_elem(&self) -> ListAttribute<ExpressionAttribute> {
        ListAttribute::from(self.expression())
    }

    fn expression(&self) -> Expressions {
        let r = |n: u32| Register::from(n);
        match self {
            Expr::Meta { key, dreg } => Expressions::Meta(vec![
                Meta::Key((*key as u32).into()),
                Meta::DestinationRegister(r(*dreg)),
            ]),
            Expr::MetaSet { key, sreg } => Expressions::Meta(vec![
                Meta::Key((*key as u32).into()),
                Meta::SourceRegister(r(*sreg)),
            ]),
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => Expressions::Payload(vec![
                Payload::DestinationRegister(r(*dreg)),
                Payload::Base(*base as u32),
                Payload::Offset(*offset),
                Payload::Len(*len),
            ]),
            Expr::Cmp { sreg, op, data } => Expressions::Cmp(vec![
                Cmp::SourceRegister(r(*sreg)),
                Cmp::Op(Operator::from(*op as u32)),
                Cmp::Data(DataAttribute::Value(data.clone())),
            ]),
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => Expressions::Bitwise(vec![
                Bitwise::SourceRegister(r(*sreg)),
                Bitwise::DestinationRegister(r(*dreg)),
                Bitwise::Length(mask.len() as u32),
                Bitwise::Mask(DataAttribute::Value(mask.clone())),
                Bitwise::Xor(DataAttribute::Value(xor.clone())),
            ]),
            Expr::CtState { dreg } => other(
                "ct",
                vec![
                    be32(hand::ct::DREG, *dreg),
                    be32(hand::ct::KEY, hand::ct::KEY_STATE),
                ],
            ),
            Expr::Lookup { set, sreg, dreg } => {
                let mut l = vec![Lookup::Set(set.clone()), Lookup::SourceRegister(r(*sreg))];
                if let Some(dreg) = dreg {
                    l.push(Lookup::DestinationRegister(r(*dreg)));
                }
                Expressions::Lookup(l)
            }
            Expr::NotInSet { set, sreg } => Expressions::Lookup(vec![
                Lookup::Set(set.clone()),
                Lookup::SourceRegister(r(*sreg)),
                Lookup::Flags(LOOKUP_F_INV),
            ]),
            Expr::Immediate(v) => Expressions::Immediate(vec![
                Immediate::DestinationRegister(Register::Verdict),
                Immediate::Data(v.data()),
            ]),
            Expr::ImmediateData { dreg, data } => Expressions::Immediate(vec![
                Immediate::DestinationRegister(r(*dreg)),
                Immediate::Data(DataAttribute::Value(data.clone())),
            ]),
            Expr::Fib {
                flags,
                result,
                dreg,
            } => other(
                "fib",
                vec![
                    be32(hand::fib::FLAGS, *flags),
                    be32(hand::fib::RESULT, *result as u32),
                    be32(hand::fib::DREG, *dreg),
                ],
            ),
            Expr::Snat { addr_reg, flags } => other(
                "nat",
                vec![
                    be32(hand::nat::TYPE, hand::nat::TYPE_SNAT),
                    be32(hand::nat::FAMILY, u32::from(NFPROTO_IPV4)),
                    be32(hand::nat::REG_ADDR_MIN, *addr_reg),
                    be32(hand::nat::FLAGS, *flags),
                ],
            ),
        }
    }
}

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

/// `iifname "<prefix>*"`: the interface name starts with `prefix` (a
/// compare of just those bytes).
pub fn iifname_prefix(prefix: &str) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::IifName,
            dreg: reg::R1,
        },
        Expr::Cmp {
            sreg: reg::R1,
            op: CmpOp::Eq,
            data: prefix.as_bytes().to_vec(),
        },
    ]
}

/// `meta mark set meta mark | <bits>`.
pub fn set_mark_bits(bits: u32) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: reg::R1,
        },
        Expr::Bitwise {
            sreg: reg::R1,
            dreg: reg::R1,
            mask: (!bits).to_ne_bytes().to_vec(),
            xor: bits.to_ne_bytes().to_vec(),
        },
        Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: reg::R1,
        },
    ]
}

/// `fib daddr type local`: the destination is an address of this host.
pub fn fib_daddr_is_local() -> Vec<Expr> {
    vec![
        Expr::Fib {
            flags: FIB_F_DADDR,
            result: FibResult::AddrType,
            dreg: reg::R1,
        },
        Expr::Cmp {
            sreg: reg::R1,
            op: CmpOp::Eq,
            data: RTN_LOCAL.to_ne_bytes().to_vec(),
        },
    ]
}

/// `snat ip to <addr> [fully-random]`.
pub fn snat_to(addr: std::net::Ipv4Addr, fully_random: bool) -> Vec<Expr> {
    vec![
        Expr::ImmediateData {
            dreg: reg::R1,
            data: addr.octets().to_vec(),
        },
        Expr::Snat {
            addr_reg: reg::R1,
            flags: if fully_random {
                NAT_RANGE_PROTO_RANDOM_FULLY
            } else {
                0
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;

    use super::*;

    /// One attribute as the kernel reads it: length, type (with
    /// `NLA_F_NESTED`), value, padding.
    fn nla(kind: u16, nested: bool, value: &[u8]) -> Vec<u8> {
        let mut out = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&(kind | if nested { 0x8000 } else { 0 }).to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn be(kind: u16, v: u32) -> Vec<u8> {
        nla(kind, false, &v.to_be_bytes())
    }

    /// `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { attrs } }`.
    fn expr(name: &str, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        let mut inner = nla(1, false, &n);
        inner.extend(nla(2, true, &attrs.concat()));
        nla(1, true, &inner)
    }

    fn emit(e: &Expr) -> Vec<u8> {
        let l = e.to_list_elem();
        let mut out = vec![0; l.buffer_len()];
        l.emit(&mut out);
        out
    }

    // The expected bytes below are what `nft --debug=mnl -f` sends for
    // `fib daddr type local`, `snat to 10.0.0.10 fully-random` and
    // `meta mark set ...` (nftables 1.0.6).

    #[test]
    fn fib_daddr_type_is_what_nft_sends() {
        let got = emit(&fib_daddr_is_local()[0]);
        assert_eq!(got, expr("fib", &[be(3, 2), be(2, 3), be(1, 1)]));
    }

    #[test]
    fn snat_fully_random_is_what_nft_sends() {
        let e = snat_to(std::net::Ipv4Addr::new(10, 0, 0, 10), true);
        assert_eq!(
            emit(&e[0]),
            expr(
                "immediate",
                &[be(1, 1), nla(2, true, &nla(1, false, &[10, 0, 0, 10]))]
            )
        );
        assert_eq!(
            emit(&e[1]),
            expr("nat", &[be(1, 0), be(2, 2), be(3, 1), be(7, 0x10)])
        );
    }

    #[test]
    fn setting_the_mark_is_what_nft_sends() {
        let e = set_mark_bits(0x80);
        assert_eq!(emit(&e[0]), expr("meta", &[be(2, 3), be(1, 1)]));
        assert_eq!(emit(&e[2]), expr("meta", &[be(2, 3), be(3, 1)]));
        let Expr::Bitwise { mask, xor, .. } = &e[1] else {
            panic!("not a bitwise")
        };
        assert_eq!(mask, &(!0x80u32).to_ne_bytes());
        assert_eq!(xor, &0x80u32.to_ne_bytes());
    }

    #[test]
    fn ct_state_and_inverted_lookup() {
        assert_eq!(
            emit(&Expr::CtState { dreg: 1 }),
            expr("ct", &[be(1, 1), be(2, 0)])
        );
        let mut set = b"no_snat".to_vec();
        set.push(0);
        assert_eq!(
            emit(&Expr::NotInSet {
                set: "no_snat".into(),
                sreg: 1
            }),
            expr("lookup", &[nla(1, false, &set), be(2, 1), be(5, 1)])
        );
    }

    #[test]
    fn interface_prefix_compares_only_the_prefix() {
        let e = iifname_prefix("eni");
        assert_eq!(
            emit(&e[1]),
            expr(
                "cmp",
                &[be(1, 1), be(2, 0), nla(3, true, &nla(1, false, b"eni"))]
            )
        );
    }
}
