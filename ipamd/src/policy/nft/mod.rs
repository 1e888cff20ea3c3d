//! A small nf_tables message layer of our own, on netlink-sys and
//! netlink-packet-core: tables, chains, sets (intervals, concatenations,
//! verdict maps), elements and rules built from a few expressions, sent as
//! atomic nfnetlink batches with every kernel answer mapped to a typed
//! error naming the message it refused.
//!
//! Why our own: the project is Apache-2.0 and must not link GPL code
//! (`rustables` is GPL-3.0; `nftnl` binds the GPL libnftnl), and the one
//! permissive pure-Rust crate, `nf_tables` 0.1 (MIT/Apache-2.0), has no
//! sets, maps, lookups or conntrack expressions, which are the core of
//! what the policy compiler needs. The subset here is ≈ 700 lines and
//! unit-tested against the kernel's attribute layout.
//!
//! Start at [`Batch`] (what to change) and [`NftSocket::apply`] (doing it).

mod batch;
mod expr;
mod socket;
pub mod wire;

pub use batch::{
    datatype, ifname_key, Batch, Element, Field, Hook, Op, SetSpec, VerdictData, HOOK_FORWARD,
    HOOK_INPUT, IFNAME_LEN,
};
pub use expr::{
    ct_established_or_related, ip_addr, is_ipv4, th_dport, AddrField, CmpOp, Expr, MetaKey,
    PayloadBase, Verdict,
};
pub use socket::{NftError, NftResult, NftSocket};
