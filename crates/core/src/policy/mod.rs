//! NetworkPolicy as data: the cluster model ([`model`]), the per-pod rules
//! it means ([`ir`]) and the evaluator between them ([`eval`]). No I/O: the
//! sources that fill the model and the nftables engine that enforces the
//! rules live in the `vpc-cni-policy` crate.

pub mod eval;
pub mod ir;
pub mod model;
