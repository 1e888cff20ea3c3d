//! NetworkPolicy enforcement: the cluster model and its sources, the
//! semantics that turn it into per-pod rules ([`ir`]), and the nftables
//! engine that programs them. The model and the evaluator are pure and
//! live in the core crate; this crate adds what talks to the world: the
//! sources (the API server's watch, a directory) and nftables.

#![warn(missing_docs)]

pub use vpc_cni_core::policy::{eval, ir, model};

pub mod compile;
pub mod engine;
pub mod nft;
pub mod run;
pub mod settings;
pub mod source;

impl engine::RuleSource for model::ClusterState {
    fn rules_for(&self, pod: &ir::PodKey) -> Option<ir::PodRules> {
        eval::rules_for(self, pod)
    }

    /// What [`eval::rules_for`] reads of the pod itself, spelled out
    /// exactly (no hash, so two classes can never be confused): its
    /// namespace, labels and named ports.
    fn class_of(&self, pod: &ir::PodKey) -> Option<String> {
        let p = self.pod(pod)?;
        let mut class = format!("{:?}", pod.namespace);
        for (k, v) in &p.labels {
            class.push_str(&format!(" {k:?}={v:?}"));
        }
        for np in &p.named_ports {
            class.push_str(&format!(" port {:?}/{:?}/{}", np.name, np.proto, np.port));
        }
        Some(class)
    }
}
