//! What the benchmark binaries share. Each binary (`pod-churn`,
//! `policy-bench`, `scale-sim`, `alloc-report`) measures one thing and
//! writes its own section of `bench/RESULTS.md` ([`results`]); [`provenance`]
//! says where, when and on which commit.

pub mod provenance;
pub mod results;
