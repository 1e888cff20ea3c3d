//! NetworkPolicy enforcement: the cluster model and its sources, the
//! semantics that turn it into per-pod rules ([`ir`]), and the nftables
//! engine that programs them.

pub mod compile;
pub mod engine;
pub mod ir;
pub mod nft;
