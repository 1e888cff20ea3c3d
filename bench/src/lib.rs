//! What the benchmark binaries share. Each binary (`pod-churn`,
//! `policy-bench`, `scale-sim`, `alloc-report`) measures one thing and
//! writes its own section of `bench/RESULTS.md` ([`results`]); [`provenance`]
//! says where, when and on which commit; [`scale`] is the scale
//! simulation's model, which `pod-churn`'s cold-node burst is set against.

pub mod provenance;
pub mod results;
pub mod scale;
