//! NetworkPolicy enforcement: the cluster model and its sources, the
//! semantics that turn it into per-pod rules ([`ir`]), and the nftables
//! engine that programs them.

pub mod compile;
pub mod engine;
pub mod eval;
pub mod ir;
pub mod model;
pub mod nft;
pub mod run;
pub mod settings;
pub mod source;

impl engine::RuleSource for model::ClusterState {
    fn rules_for(&self, pod: &ir::PodKey) -> Option<ir::PodRules> {
        eval::rules_for(self, pod)
    }
}
