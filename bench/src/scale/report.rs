//! The scale simulation's section of bench/RESULTS.md.

use std::fmt::Write as _;
use std::time::Duration;

use ipamd::cloud::sim::Action;

use super::node::Policy;
use super::{quantile, Phase};

/// A lone node's cold start.
pub struct Lone {
    /// Policy.
    pub policy: Policy,
    /// Whether its primary ENI held a prefix from launch.
    pub preheld: bool,
    /// Phase (one node).
    pub phase: Phase,
}

/// One fleet's scale-out.
pub struct ScaleRun {
    /// Nodes.
    pub nodes: usize,
    /// Policy.
    pub policy: Policy,
    /// The scale-out.
    pub phase: Phase,
    /// What the buckets allow for one Assign per node.
    pub bound: Duration,
    /// Wall-clock time the run took on this machine.
    pub wall: Duration,
}

/// Churn and burst-after-idle of one fleet (after its scale-out).
pub struct LongRun {
    /// Nodes.
    pub nodes: usize,
    /// Policy.
    pub policy: Policy,
    /// Steady churn.
    pub churn: Phase,
    /// Addresses held idle per node after the idle hour.
    pub idle_held: f64,
    /// The burst.
    pub burst: Phase,
}

/// Everything the run measured.
pub struct Report {
    /// Date, machine.
    pub header: String,
    /// Lone node runs.
    pub lone: Vec<Lone>,
    /// Scale-outs.
    pub scale: Vec<ScaleRun>,
    /// Long runs.
    pub long: Vec<LongRun>,
    /// The plot, relative to RESULTS.md.
    pub svg_href: String,
}

fn s(d: Duration) -> String {
    let v = d.as_secs_f64();
    if v < 10.0 {
        format!("{v:.2} s")
    } else {
        format!("{v:.0} s")
    }
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

fn find(scale: &[ScaleRun], nodes: usize, policy: Policy) -> Option<&ScaleRun> {
    scale
        .iter()
        .find(|r| r.nodes == nodes && r.policy == policy)
}

impl Report {
    /// The Markdown section (without markers).
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(
            m,
            "## Scale simulation: warm pools against one EC2 account (virtual time)\n"
        );
        let _ = writeln!(m, "{}\n", self.header);
        let _ = writeln!(
            m,
            "Every node is an m5.large in prefix mode (`ENABLE_PREFIX_DELEGATION=true`, aws-node's default `WARM_PREFIX_TARGET=1`), \
             all in one simulated account with EC2's published per-account buckets (Assign, Unassign, Create, Delete: 100 tokens at 5/s each; \
             Attach/Detach: 50 at 5/s; Describe: 100 at 20/s) and measured latencies (Assign 0.5 s, Describe 0.2 s, a new ENI usable 5 s after Attach, \
             throttled answers after 50 ms). Time is tokio's paused clock: the runs below are hours of cluster time. \
             *vpc-cni* runs the real `Pool` behind the real `Budget` (`ipamd/src/pool`, `crates/cloud/src/budget.rs`); \
             *aws-node-like* is a model in `bench/src/scale/node.rs`: its 5 s pool loop adding one prefix when fewer than 16 addresses are free, \
             aws-sdk-go's default retryer (3 retries, throttle backoff 2^n × U(0.5, 1) s), no client-side buckets. Pods get their address the moment one is free \
             (the model ignores kubelet's sandbox retry, which only makes aws-node slower).\n"
        );
        let _ = writeln!(m, "### A lone node\n");
        let _ = writeln!(
            m,
            "| policy | pool at launch | first pod | all {} pods | EC2 calls |",
            super::PODS
        );
        let _ = writeln!(m, "|---|---|---:|---:|---:|");
        for l in &self.lone {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                l.policy.name(),
                if l.preheld {
                    "one prefix from launch"
                } else {
                    "empty"
                },
                s(l.phase.first[0]),
                s(l.phase.all[0]),
                l.phase.calls.total()
            );
        }
        let pre = self
            .lone
            .iter()
            .find(|l| l.preheld && l.policy == Policy::Fixed);
        let cold = self
            .lone
            .iter()
            .find(|l| !l.preheld && l.policy == Policy::Fixed);
        if let (Some(pre), Some(cold)) = (pre, cold) {
            let _ = writeln!(
                m,
                "\nTargets: first pod ≤ 1 s with addresses held from launch: {} {}; 30 pods ≤ 5 s on a lone cold node with prefix delegation: {} {}. \
                 Times count from ipamd's start (its IMDS read and start-up Describes included).\n",
                s(pre.phase.first[0]),
                mark(pre.phase.first[0] <= Duration::from_secs(1)),
                s(cold.phase.all[0]),
                mark(cold.phase.all[0] <= Duration::from_secs(5)),
            );
        }
        let _ = writeln!(
            m,
            "### Every node scales out {} pods at once\n",
            super::PODS
        );
        let _ = writeln!(m, "Nodes start with one prefix from launch, so each needs exactly one more Assign (of two prefixes) for 30 pods; \
            the bound is what the Assign bucket allows for one call per node: (N − 100) / 5 s + 0.5 s.\n");
        let _ = writeln!(
            m,
            "| nodes | policy | first pod p50 / p99 | all pods p50 / p99 | last node | bound | ×bound | Assign calls accepted / node | throttled / node | all calls (Assign, Unassign, Describe, Create+Attach) | idle addresses / node | wall clock |"
        );
        let _ = writeln!(
            m,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
        );
        for r in &self.scale {
            let p = &r.phase;
            let n = r.nodes as f64;
            let last = quantile(&p.all, 1.0);
            let c = &p.calls;
            let _ = writeln!(
                m,
                "| {} | {} | {} / {} | {} / {} | {} | {} | {:.2} | {:.2} | {:.1} | {} ({}, {}, {}, {}) | {:.1} | {:.0} s |",
                r.nodes,
                r.policy.name(),
                s(quantile(&p.first, 0.5)),
                s(quantile(&p.first, 0.99)),
                s(quantile(&p.all, 0.5)),
                s(quantile(&p.all, 0.99)),
                s(last),
                s(r.bound),
                last.as_secs_f64() / r.bound.as_secs_f64(),
                c.accepted(Action::Assign) as f64 / n,
                c.throttled() as f64 / n,
                c.total(),
                c.of(Action::Assign),
                c.of(Action::Unassign),
                c.of(Action::Describe),
                c.of(Action::Create) + c.of(Action::Attach),
                p.idle_per_node,
                r.wall.as_secs_f64(),
            );
        }
        let mut checks = Vec::new();
        for nodes in self
            .scale
            .iter()
            .map(|r| r.nodes)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let (Some(ours), Some(aws)) = (
                find(&self.scale, nodes, Policy::Fixed),
                find(&self.scale, nodes, Policy::AwsNodeLike),
            ) else {
                continue;
            };
            let ratio = quantile(&ours.phase.all, 1.0).as_secs_f64() / ours.bound.as_secs_f64();
            let n = nodes as f64;
            let per_node = ours.phase.calls.accepted(Action::Assign) as f64 / n;
            let thr = ours.phase.calls.throttled() as f64 / n;
            let thr_aws = aws.phase.calls.throttled() as f64 / n;
            checks.push(format!(
                "{nodes} nodes (vpc-cni fixed): all pods within {ratio:.2}× the bucket bound (target ≤ 1.2×) {}; {per_node:.2} accepted Assign calls per node (target 1) {}; \
                 {thr:.1} throttled answers per node vs {thr_aws:.1} for aws-node-like (target ≤ half) {}; the account absorbed {} requests ({} throttled) vs {} ({} throttled).",
                mark(ratio <= 1.2),
                mark((per_node - 1.0).abs() < 1e-9),
                mark(thr <= thr_aws / 2.0),
                ours.phase.calls.total(),
                ours.phase.calls.throttled(),
                aws.phase.calls.total(),
                aws.phase.calls.throttled(),
            ));
        }
        if !checks.is_empty() {
            let _ = writeln!(m, "\nTargets:\n");
            for c in checks {
                let _ = writeln!(m, "- {c}");
            }
        }
        let sizes: Vec<usize> = self
            .scale
            .iter()
            .map(|r| r.nodes)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if sizes.len() >= 2 {
            let (a, b) = (sizes[0], sizes[sizes.len() - 1]);
            if let (Some(x), Some(y)) = (
                find(&self.scale, a, Policy::Fixed),
                find(&self.scale, b, Policy::Fixed),
            ) {
                let _ = writeln!(
                    m,
                    "- Growth: from {a} to {b} nodes the last node's wait grows {:.1}× (the bound {:.1}×): linear in the calls the account must serve, \
                     because each node asks once and the buckets, not retries, set the pace.",
                    quantile(&y.phase.all, 1.0).as_secs_f64() / quantile(&x.phase.all, 1.0).as_secs_f64(),
                    y.bound.as_secs_f64() / x.bound.as_secs_f64(),
                );
            }
        }
        let _ = writeln!(
            m,
            "\n![nodes with all pods ready over time]({})\n",
            self.svg_href
        );
        if !self.long.is_empty() {
            let _ = writeln!(m, "### Steady churn, then a burst after an idle hour\n");
            let _ = writeln!(m, "Five minutes after the scale-out, each node replaces one pod every 20 s for 10 minutes (its pod count stays at 30); then every pod is deleted, \
                the fleet idles for an hour (surplus goes back after `VPC_CNI_RELEASE_DELAY_S`, default 300 s; aws-node returns a free prefix every 30 s), \
                and every node asks for 30 pods again.\n");
            let _ = writeln!(m, "| nodes | policy | mutating EC2 calls during churn (Assign, Unassign) | reconcile Describes during churn | worst ADD wait in churn | addresses held idle / node after the idle hour | burst: all pods p50 / p99 | burst: EC2 calls | burst: throttled |");
            let _ = writeln!(m, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
            for l in &self.long {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} ({}, {}) | {} | {} | {:.1} | {} / {} | {} | {} |",
                    l.nodes,
                    l.policy.name(),
                    l.churn.calls.mutating(),
                    l.churn.calls.of(Action::Assign),
                    l.churn.calls.of(Action::Unassign),
                    l.churn.calls.of(Action::Describe),
                    s(quantile(&l.churn.all, 1.0)),
                    l.idle_held,
                    s(quantile(&l.burst.all, 0.5)),
                    s(quantile(&l.burst.all, 0.99)),
                    l.burst.calls.total(),
                    l.burst.calls.throttled(),
                );
            }
            let ok = self
                .long
                .iter()
                .filter(|l| l.policy == Policy::Fixed)
                .all(|l| l.churn.calls.mutating() == 0);
            let _ = writeln!(
                m,
                "\nTarget: zero EC2 calls while churn stays inside the warm pool (vpc-cni fixed; mutating calls) {}. \
                 Describes during churn, if any, are the inventory check (`VPC_CNI_RECONCILE_INTERVAL_S`, default 3600 s ± 20 %, two Describes per node), \
                 which runs on its timer whatever the pods do (aws-node reconciles every minute). \
                 The adaptive pool's Assigns and Unassigns during churn, if any, follow its rate estimate as the scale-out burst fades from it.",
                mark(ok)
            );
        }
        m
    }
}
