//! nf_tables, as the policy engine uses it: the message layer lives in the
//! workspace's one netlink crate (`vpc_cni_netlink::nft`: batches, the
//! socket, expressions on netlink-packet-netfilter's messages) and is
//! re-exported here, so the rule compiler ([`crate::compile`]) and the
//! engine keep their short paths.
//!
//! Start at [`Batch`] (what to change) and [`NftSocket::apply`] (doing it).

pub use vpc_cni_netlink::nft::*;
