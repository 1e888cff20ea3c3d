//! nf_tables over netlink: tables, chains, sets (intervals,
//! concatenations, verdict maps), elements and rules, sent as atomic
//! nfnetlink batches through the crate's generic socket, with every kernel
//! answer mapped to a typed error naming the message it refused.
//!
//! Messages are netlink-packet-netfilter's (`NfTablesMessage` and its
//! attributes; MIT, on the same netlink-packet-core as everything else
//! here). What that crate lacks is written here, small and tested against
//! the bytes `nft` sends: the `ct`, `fib` and `nat` expressions, a
//! concatenation's field lengths (`NFTA_SET_DESC_CONCAT`), nft's user data
//! on sets and elements (`nft list` reads it), and interval encoding.
//! GPL code stays out (`rustables` is GPL-3.0; `nftnl` binds libnftnl), and
//! no `nft` process is ever spawned.
//!
//! Start at [`Batch`] (what to change) and [`NftSocket::apply`] (doing it).

mod batch;
mod expr;
mod socket;

pub use batch::{
    datatype, ifname_key, Batch, ChainType, Element, Family, Field, Hook, Op, SetSpec, VerdictData,
    HOOK_FORWARD, HOOK_INPUT, HOOK_POSTROUTING, HOOK_PREROUTING, IFNAME_LEN, PRIORITY_MANGLE,
    PRIORITY_SRCNAT,
};
pub use expr::{
    ct_established_or_related, fib_daddr_is_local, iifname_prefix, ip_addr, is_ipv4, set_mark_bits,
    snat_to, th_dport, AddrField, CmpOp, Expr, FibResult, MetaKey, PayloadBase, Verdict,
    CT_ESTABLISHED_RELATED, FIB_F_DADDR, NAT_RANGE_PROTO_RANDOM_FULLY, NFPROTO_IPV4, RTN_LOCAL,
};
pub use socket::{Netfilter, NftError, NftResult, NftSocket};

/// The message types, for tests that look inside a [`Batch`].
pub use netlink_packet_netfilter as packet;

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
