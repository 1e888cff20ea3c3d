//! NetworkPolicy semantics: which traffic one pod may receive and send,
//! given everything the source knows. Pure and deterministic; the output is
//! canonical so the engine can compare it with what it programmed last.
//!
//! - A policy applies to the pods of its own namespace that its
//!   `podSelector` selects; a direction is isolated as soon as one applying
//!   policy has that policy type, and what is allowed is the union of the
//!   rules of every applying policy of that type.
//! - A rule allows traffic that matches any of its peers (all peers when it
//!   has none) on any of its ports (all ports when it has none).
//! - Named ports resolve on the destination: the pod itself for ingress,
//!   each peer pod for egress (so egress yields one `Allow` per resolved
//!   peer address). A name nothing resolves allows nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::policy::ir::{Allow, Isolation, Peers, PodKey, PodRules, PortRange, Ports};
use crate::policy::model::ranges::{merge_addrs, merge_ports, merge_u32};
use crate::policy::model::{ClusterState, NetworkPolicy, Peer, Pod, PolicyPort, Rule, Selector};

/// The rules for the pod named by `pod`; `None` when the source does not
/// know the pod (strict mode denies those).
pub fn rules_for(state: &ClusterState, pod: &PodKey) -> Option<PodRules> {
    let target = state.pod(pod)?;
    let mut ingress: Option<Vec<Allow>> = None;
    let mut egress: Option<Vec<Allow>> = None;
    for pol in state.policies_in(&pod.namespace) {
        if !pol.pod_selector.matches(&target.labels) {
            continue;
        }
        let mut resolver = Resolver::new(state, pol);
        if pol.affects_ingress {
            let out = ingress.get_or_insert_with(Vec::new);
            for (i, rule) in pol.ingress.iter().enumerate() {
                ingress_rule(&mut resolver, (false, i), rule, target, out);
            }
        }
        if pol.affects_egress {
            let out = egress.get_or_insert_with(Vec::new);
            for (i, rule) in pol.egress.iter().enumerate() {
                egress_rule(&mut resolver, (true, i), rule, out);
            }
        }
    }
    Some(PodRules {
        ingress: canonical(ingress),
        egress: canonical(egress),
    })
}

/// Resolves peers of one policy against the state, caching namespace
/// selector results (every pod of a namespace shares the answer).
struct Resolver<'a> {
    state: &'a ClusterState,
    policy: &'a NetworkPolicy,
    ns_cache: HashMap<(*const Selector, &'a str), bool>,
}

impl<'a> Resolver<'a> {
    fn new(state: &'a ClusterState, policy: &'a NetworkPolicy) -> Self {
        Self {
            state,
            policy,
            ns_cache: HashMap::new(),
        }
    }

    fn selects(&mut self, peer: &'a Peer, pod: &'a Pod) -> bool {
        let Peer::Pods { namespaces, pods } = peer else {
            return false;
        };
        let ns_ok = match namespaces {
            None => pod.key.namespace == self.policy.namespace,
            Some(sel) => {
                let state = self.state;
                *self
                    .ns_cache
                    .entry((sel as *const Selector, pod.key.namespace.as_str()))
                    .or_insert_with(|| sel.matches(&state.namespace_labels(&pod.key.namespace)))
            }
        };
        ns_ok && pods.matches(&pod.labels)
    }

    /// The addresses a rule's peers stand for; `None` when the rule has no
    /// peers and so allows every address. `which` is (egress, index).
    fn peer_ranges(&mut self, which: (bool, usize), rule: &'a Rule) -> Option<Vec<(u32, u32)>> {
        if rule.peers.is_empty() {
            return None;
        }
        let id = (
            self.policy as *const NetworkPolicy as usize,
            which.0,
            which.1,
        );
        let state = self.state;
        let cached = state.cached_peers(id, || self.resolve_peers(rule));
        Some(cached.to_vec())
    }

    fn resolve_peers(&mut self, rule: &'a Rule) -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        for peer in &rule.peers {
            match peer {
                Peer::Block(ranges) => v.extend_from_slice(ranges),
                // Without a namespaceSelector only the policy's own
                // namespace can match: look at its pods alone.
                Peer::Pods {
                    namespaces: None, ..
                } => {
                    let state = self.state;
                    for pod in state.pods_in(&self.policy.namespace) {
                        if let (Some(ip), true) = (pod.ip, self.selects(peer, pod)) {
                            v.push((ip.into(), ip.into()));
                        }
                    }
                }
                // Namespaces first: most fail the selector, and their pods
                // are then skipped without a look.
                Peer::Pods {
                    namespaces: Some(ns_sel),
                    pods,
                } => {
                    let state = self.state;
                    for ns in state.pod_namespaces() {
                        if !ns_sel.matches(&state.namespace_labels(ns)) {
                            continue;
                        }
                        for pod in state.pods_in(ns) {
                            if let (Some(ip), true) = (pod.ip, pods.matches(&pod.labels)) {
                                v.push((ip.into(), ip.into()));
                            }
                        }
                    }
                }
            }
        }
        merge_u32(v)
    }

    /// Known pods (with an address) that a rule's peers cover, for
    /// resolving named ports on the destination side of egress: pods a
    /// selector picks, and pods whose address falls in an ipBlock.
    fn peer_pods(&mut self, rule: &'a Rule) -> Vec<&'a Pod> {
        let state = self.state;
        state
            .pods()
            .filter(|pod| {
                let Some(ip) = pod.ip else { return false };
                rule.peers.is_empty()
                    || rule.peers.iter().any(|peer| match peer {
                        Peer::Block(ranges) => {
                            let ip = u32::from(ip);
                            ranges.iter().any(|&(a, b)| a <= ip && ip <= b)
                        }
                        Peer::Pods { .. } => self.selects(peer, pod),
                    })
            })
            .collect()
    }
}

fn to_peers(ranges: Option<Vec<(u32, u32)>>) -> Option<Peers> {
    match ranges {
        None => Some(Peers::Any),
        Some(r) if r.is_empty() => None,
        Some(r) => Some(Peers::Ranges(
            r.into_iter().map(|(a, b)| (a.into(), b.into())).collect(),
        )),
    }
}

fn numeric(p: &PolicyPort) -> Option<PortRange> {
    match *p {
        PolicyPort::Numeric { proto, first, last } => Some(PortRange { proto, first, last }),
        PolicyPort::Named { .. } => None,
    }
}

/// The ports of `dest` that the named policy ports stand for.
fn resolve_named<'p>(
    ports: &'p [PolicyPort],
    dest: &'p Pod,
) -> impl Iterator<Item = PortRange> + 'p {
    ports
        .iter()
        .filter_map(|p| match p {
            PolicyPort::Named { proto, name } => Some((*proto, name.as_str())),
            PolicyPort::Numeric { .. } => None,
        })
        .flat_map(move |(proto, name)| {
            dest.named_ports
                .iter()
                .filter(move |np| np.proto == proto && np.name == name)
                .map(|np| PortRange {
                    proto: np.proto,
                    first: np.port,
                    last: np.port,
                })
        })
}

fn ingress_rule<'a>(
    r: &mut Resolver<'a>,
    which: (bool, usize),
    rule: &'a Rule,
    target: &Pod,
    out: &mut Vec<Allow>,
) {
    let Some(peers) = to_peers(r.peer_ranges(which, rule)) else {
        return;
    };
    let ports = if rule.ports.is_empty() {
        Ports::Any
    } else {
        let v: Vec<PortRange> = rule
            .ports
            .iter()
            .filter_map(numeric)
            .chain(resolve_named(&rule.ports, target))
            .collect();
        if v.is_empty() {
            return;
        }
        Ports::Ranges(merge_ports(v))
    };
    out.push(Allow { peers, ports });
}

fn egress_rule<'a>(
    r: &mut Resolver<'a>,
    which: (bool, usize),
    rule: &'a Rule,
    out: &mut Vec<Allow>,
) {
    let nums: Vec<PortRange> = rule.ports.iter().filter_map(numeric).collect();
    if rule.ports.is_empty() || !nums.is_empty() {
        if let Some(peers) = to_peers(r.peer_ranges(which, rule)) {
            let ports = if rule.ports.is_empty() {
                Ports::Any
            } else {
                Ports::Ranges(merge_ports(nums))
            };
            out.push(Allow { peers, ports });
        }
    }
    if rule
        .ports
        .iter()
        .any(|p| matches!(p, PolicyPort::Named { .. }))
    {
        for dest in r.peer_pods(rule) {
            let v: Vec<PortRange> = resolve_named(&rule.ports, dest).collect();
            if let (false, Some(ip)) = (v.is_empty(), dest.ip) {
                out.push(Allow {
                    peers: Peers::Ranges(vec![(ip, ip)]),
                    ports: Ports::Ranges(merge_ports(v)),
                });
            }
        }
    }
}

/// Canonical form: one `Allow` per distinct port set with the union of its
/// peers, sorted; everything else is subsumed once any-peer/any-port is
/// allowed.
fn canonical(allows: Option<Vec<Allow>>) -> Isolation {
    let Some(allows) = allows else {
        return Isolation::Open;
    };
    let mut by_ports: BTreeMap<Ports, Option<Vec<(Ipv4Addr, Ipv4Addr)>>> = BTreeMap::new();
    for a in allows {
        let slot = by_ports.entry(a.ports).or_insert_with(|| Some(Vec::new()));
        match (slot.as_mut(), a.peers) {
            (None, _) => {}
            (Some(_), Peers::Any) => *slot = None,
            (Some(v), Peers::Ranges(r)) => v.extend(r),
        }
    }
    let everything = by_ports.get(&Ports::Any).is_some_and(|p| p.is_none());
    let mut v: Vec<Allow> = by_ports
        .into_iter()
        .filter(|(ports, peers)| !everything || (*ports == Ports::Any && peers.is_none()))
        .map(|(ports, peers)| Allow {
            peers: peers.map_or(Peers::Any, |r| Peers::Ranges(merge_addrs(r))),
            ports,
        })
        .collect();
    v.sort();
    Isolation::Isolated(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ir::Proto;
    use crate::policy::model::yaml::parse_objects;
    use crate::policy::model::ClusterState;

    /// x: a(.1, http=TCP/80, dns=UDP/53) b(.2); y (team=blue): a(.3,
    /// http=TCP/8080) b(.4); z (not delivered as a Namespace object):
    /// a(.5) c(no address yet).
    const WORLD: &str = r#"
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
kind: Namespace
metadata: {name: y, labels: {ns: y, team: blue}}
---
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]
status: {podIP: 10.0.0.1}
---
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
status: {podIP: 10.0.0.2}
---
kind: Pod
metadata: {name: a, namespace: y, labels: {pod: a}}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 8080}]
status: {podIP: 10.0.0.3}
---
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b, tier: db}}
status: {podIP: 10.0.0.4}
---
kind: Pod
metadata: {name: a, namespace: z, labels: {pod: a}}
status: {podIP: 10.0.0.5}
---
kind: Pod
metadata: {name: c, namespace: z, labels: {pod: c}}
"#;

    fn state(policies: &str) -> ClusterState {
        let mut objs = parse_objects(WORLD).unwrap();
        objs.extend(parse_objects(policies).unwrap());
        ClusterState::from_objects(objs, 1)
    }

    fn key(ns: &str, name: &str) -> PodKey {
        PodKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn rules(policies: &str, ns: &str, name: &str) -> PodRules {
        rules_for(&state(policies), &key(ns, name)).expect("pod is known")
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn hosts(lasts: &[u8]) -> Peers {
        Peers::Ranges(merge_addrs(lasts.iter().map(|&l| (ip(l), ip(l))).collect()))
    }

    fn tcp(first: u16, last: u16) -> PortRange {
        PortRange {
            proto: Proto::Tcp,
            first,
            last,
        }
    }

    fn ports(v: &[PortRange]) -> Ports {
        Ports::Ranges(v.to_vec())
    }

    fn allow(peers: Peers, ports: Ports) -> Allow {
        Allow { peers, ports }
    }

    /// Expected allows in any order (the canonical order is the IR's
    /// business, not the test's).
    fn iso(mut v: Vec<Allow>) -> Isolation {
        v.sort();
        Isolation::Isolated(v)
    }

    fn ingress_only(v: Vec<Allow>) -> PodRules {
        PodRules {
            ingress: iso(v),
            egress: Isolation::Open,
        }
    }

    fn policy(ns: &str, name: &str, spec: &str) -> String {
        format!("---\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n")
    }

    const OPEN: PodRules = PodRules {
        ingress: Isolation::Open,
        egress: Isolation::Open,
    };

    #[test]
    fn unknown_pod_has_no_rules() {
        assert_eq!(rules_for(&state(""), &key("x", "nope")), None);
    }

    #[test]
    fn no_policy_leaves_pod_open() {
        assert_eq!(rules("", "x", "a"), OPEN);
    }

    #[test]
    fn default_deny_ingress_isolates_only_selected_pods_of_its_namespace() {
        let p = policy("x", "deny", "  podSelector: {matchLabels: {pod: a}}");
        assert_eq!(rules(&p, "x", "a"), ingress_only(vec![]));
        assert_eq!(rules(&p, "x", "b"), OPEN);
        assert_eq!(
            rules(&p, "y", "a"),
            OPEN,
            "a policy applies in its namespace only"
        );
    }

    #[test]
    fn empty_pod_selector_selects_every_pod_of_the_namespace() {
        let p = policy("x", "deny", "  podSelector: {}");
        assert_eq!(rules(&p, "x", "a"), ingress_only(vec![]));
        assert_eq!(rules(&p, "x", "b"), ingress_only(vec![]));
    }

    #[test]
    fn pod_selector_peer_stays_in_the_policy_namespace() {
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]",
        );
        // y/a and z/a carry pod=a too but are in other namespaces.
        assert_eq!(
            rules(&p, "x", "b"),
            ingress_only(vec![allow(hosts(&[1]), Ports::Any)])
        );
    }

    #[test]
    fn namespace_selector_peer_takes_every_pod_of_matching_namespaces() {
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]",
        );
        assert_eq!(
            rules(&p, "x", "a"),
            ingress_only(vec![allow(hosts(&[3, 4]), Ports::Any)])
        );
        // An empty namespaceSelector: every pod with an address, anywhere.
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}]}]",
        );
        assert_eq!(
            rules(&p, "x", "a"),
            ingress_only(vec![allow(hosts(&[1, 2, 3, 4, 5]), Ports::Any)])
        );
    }

    #[test]
    fn namespace_unknown_to_source_still_matches_by_name_label() {
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]}]",
        );
        assert_eq!(
            rules(&p, "x", "a"),
            ingress_only(vec![allow(hosts(&[5]), Ports::Any)])
        );
    }

    #[test]
    fn both_selectors_in_one_peer_and_but_separate_peers_or() {
        let and = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: blue}}\n      podSelector: {matchLabels: {pod: a}}",
        );
        assert_eq!(
            rules(&and, "x", "a"),
            ingress_only(vec![allow(hosts(&[3]), Ports::Any)])
        );
        let or = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: blue}}\n    - podSelector: {matchLabels: {pod: a}}",
        );
        assert_eq!(
            rules(&or, "x", "a"),
            ingress_only(vec![allow(hosts(&[1, 3, 4]), Ports::Any)])
        );
    }

    #[test]
    fn match_expressions_in_peers() {
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y, z]}]}\n      podSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}",
        );
        // z has no `ns` label (not delivered), so only y/a.
        assert_eq!(
            rules(&p, "x", "a"),
            ingress_only(vec![allow(hosts(&[3]), Ports::Any)])
        );
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}\n      podSelector: {matchExpressions: [{key: tier, operator: Exists}]}",
        );
        assert_eq!(
            rules(&p, "x", "a"),
            ingress_only(vec![allow(hosts(&[4]), Ports::Any)])
        );
    }

    #[test]
    fn ip_block_except_is_subtracted() {
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.0/30, 10.0.0.128/25]}",
        );
        assert_eq!(
            rules(&p, "x", "a"),
            ingress_only(vec![allow(
                Peers::Ranges(vec![(ip(4), ip(127))]),
                Ports::Any
            )])
        );
        // An IPv6 block covers nothing of an IPv4 pod network.
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: '::/0'}}]}]",
        );
        assert_eq!(rules(&p, "x", "a"), ingress_only(vec![]));
    }

    #[test]
    fn ports_protocols_and_end_port() {
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - {port: 53, protocol: UDP}\n    - {port: 9000, endPort: 9010, protocol: SCTP}\n    - {port: 81, endPort: 85}\n    - {protocol: UDP}",
        );
        assert_eq!(
            rules(&p, "x", "a"),
            ingress_only(vec![allow(
                Peers::Any,
                ports(&[
                    tcp(80, 85),
                    PortRange {
                        proto: Proto::Udp,
                        first: 0,
                        last: 65535
                    },
                    PortRange {
                        proto: Proto::Sctp,
                        first: 9000,
                        last: 9010
                    },
                ])
            )])
        );
    }

    #[test]
    fn named_port_resolves_on_the_local_pod_for_ingress() {
        let p = policy(
            "",
            "p",
            "  podSelector: {}\n  ingress: [{ports: [{port: http}, {port: dns, protocol: UDP}, {port: dns}]}]",
        )
        .replace("namespace: }", "namespace: x}");
        let p = p + &policy(
            "y",
            "p",
            "  podSelector: {}\n  ingress: [{ports: [{port: http}]}]",
        );
        // x/a: http=TCP/80, dns=UDP/53; `dns` on TCP resolves to nothing.
        assert_eq!(
            rules(&p, "x", "a"),
            ingress_only(vec![allow(
                Peers::Any,
                ports(&[
                    tcp(80, 80),
                    PortRange {
                        proto: Proto::Udp,
                        first: 53,
                        last: 53
                    }
                ])
            )])
        );
        assert_eq!(
            rules(&p, "y", "a"),
            ingress_only(vec![allow(Peers::Any, ports(&[tcp(8080, 8080)]))])
        );
        // x/b has no named ports: the rule allows nothing.
        assert_eq!(rules(&p, "x", "b"), ingress_only(vec![]));
    }

    #[test]
    fn named_port_resolves_on_each_peer_for_egress() {
        let p = policy(
            "z",
            "p",
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}]\n    ports: [{port: http}, {port: 443}]",
        );
        assert_eq!(
            rules(&p, "z", "a"),
            PodRules {
                ingress: Isolation::Open,
                egress: iso(vec![
                    // 443 to every peer; http to each peer as it names it.
                    allow(hosts(&[1, 3, 5]), ports(&[tcp(443, 443)])),
                    allow(hosts(&[1]), ports(&[tcp(80, 80)])),
                    allow(hosts(&[3]), ports(&[tcp(8080, 8080)])),
                ]),
            }
        );
        // Through an ipBlock: only the known pods inside the block resolve.
        let p = policy(
            "z",
            "p",
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.1/32]}}], ports: [{port: http}]}]",
        );
        assert_eq!(
            rules(&p, "z", "a").egress,
            Isolation::Isolated(vec![allow(hosts(&[3]), ports(&[tcp(8080, 8080)]))])
        );
    }

    #[test]
    fn egress_and_policy_types_defaulting() {
        // Egress rules without policyTypes: both directions isolated.
        let p = policy(
            "x",
            "p",
            "  podSelector: {matchLabels: {pod: a}}\n  egress: [{to: [{podSelector: {}}], ports: [{port: 53, protocol: UDP}]}]",
        );
        assert_eq!(
            rules(&p, "x", "a"),
            PodRules {
                ingress: Isolation::Isolated(vec![]),
                egress: Isolation::Isolated(vec![allow(
                    hosts(&[1, 2]),
                    ports(&[PortRange {
                        proto: Proto::Udp,
                        first: 53,
                        last: 53
                    }])
                )]),
            }
        );
        // policyTypes [Egress] with ingress rules: the ingress rules are inert.
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]",
        );
        assert_eq!(
            rules(&p, "x", "a"),
            PodRules {
                ingress: Isolation::Open,
                egress: Isolation::Isolated(vec![])
            }
        );
        // An empty rule allows everything in its direction.
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress: [{}]\n  egress: [{}]",
        );
        let all = Isolation::Isolated(vec![allow(Peers::Any, Ports::Any)]);
        assert_eq!(
            rules(&p, "x", "a"),
            PodRules {
                ingress: all.clone(),
                egress: all
            }
        );
    }

    #[test]
    fn several_policies_combine_as_a_union() {
        let p = policy(
            "x",
            "from-b",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}]",
        ) + &policy(
            "x",
            "from-y",
            "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}, {from: [{ipBlock: {cidr: 10.0.0.5/32}}]}]",
        ) + &policy("x", "deny", "  podSelector: {}");
        assert_eq!(
            rules(&p, "x", "a"),
            ingress_only(vec![
                allow(hosts(&[5]), Ports::Any),
                allow(hosts(&[2, 3, 4]), ports(&[tcp(80, 80)])),
            ])
        );
        // x/b is selected by from-y and deny only.
        assert_eq!(
            rules(&p, "x", "b"),
            ingress_only(vec![
                allow(hosts(&[5]), Ports::Any),
                allow(hosts(&[3, 4]), ports(&[tcp(80, 80)])),
            ])
        );
    }

    #[test]
    fn allow_all_subsumes_the_rest_and_order_does_not_matter() {
        let a = policy(
            "x",
            "a",
            "  podSelector: {}\n  ingress: [{from: [{podSelector: {}}], ports: [{port: 80}]}]",
        );
        let b = policy("x", "b", "  podSelector: {}\n  ingress: [{}]");
        let expect = ingress_only(vec![allow(Peers::Any, Ports::Any)]);
        assert_eq!(rules(&(a.clone() + &b), "x", "a"), expect);
        assert_eq!(rules(&(b + &a), "x", "a"), expect);
    }

    #[test]
    fn resolved_peers_follow_changes_to_the_snapshot() {
        let p = policy(
            "x",
            "p",
            "  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
        );
        let mut s = state(&p);
        let first = rules_for(&s, &key("x", "a")).unwrap();
        assert_eq!(first, ingress_only(vec![allow(hosts(&[2]), Ports::Any)]));
        // Asked again (the cached answer) and for another pod: the same peers.
        assert_eq!(rules_for(&s, &key("x", "a")).unwrap(), first);
        assert_eq!(rules_for(&s, &key("x", "c")), None);
        let more = parse_objects(
            "kind: Pod\nmetadata: {name: d, namespace: x, labels: {pod: b}}\nstatus: {podIP: 10.0.0.9}\n",
        )
        .unwrap();
        for o in more {
            s.insert(o);
        }
        assert_eq!(
            rules_for(&s, &key("x", "a")).unwrap(),
            ingress_only(vec![allow(hosts(&[2, 9]), Ports::Any)])
        );
        s.remove(&crate::policy::model::ObjectKey::Pod(key("x", "b")));
        assert_eq!(
            rules_for(&s, &key("x", "a")).unwrap(),
            ingress_only(vec![allow(hosts(&[9]), Ports::Any)])
        );
    }

    #[test]
    fn selected_pods_without_address_contribute_nothing() {
        let p = policy(
            "z",
            "p",
            "  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}]",
        );
        assert_eq!(rules(&p, "z", "a"), ingress_only(vec![]));
        // The unaddressed pod itself still gets its rules (it is known).
        assert_eq!(rules(&p, "z", "c"), ingress_only(vec![]));
    }
}
