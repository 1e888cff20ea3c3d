//! The policy IR → nf_tables objects. Pure: builds [`Batch`] messages, sends
//! nothing, so every rule's shape is testable without root.
//!
//! The table (`nft list table inet vpc_cni`):
//!
//! ```text
//! table inet vpc_cni {
//!   map ingress { type ifname : verdict }   # host veth → chain for traffic to the pod
//!   map egress  { type ifname : verdict }   # host veth → chain for traffic from the pod
//!   chain deny  { drop }                    # pods whose labels are not known yet (strict)
//!   chain p<n>  {                           # one per distinct allow list, shared by pods
//!     ip saddr . meta l4proto @p<n>_a return               # peers on any port
//!     ip saddr . meta l4proto . th dport @p<n>_p return    # peers on given ports
//!     drop
//!   }
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     ct state established,related accept
//!     iifname vmap @egress
//!     oifname vmap @ingress
//!   }
//!   chain input { type filter hook input priority filter; policy accept;
//!     ct state established,related accept
//!     iifname vmap @egress
//!   }
//! }
//! ```
//!
//! Why this shape: the maps are keyed by the host veth's name, which is
//! known before the veth exists, so a pod's rules can be in force before
//! its first packet; a pod whose direction is open simply has no element.
//! The node's own traffic to its pods leaves through the output hook and
//! never meets these chains (kubelet probes stay allowed). Allow lists are
//! deduplicated: pods selected by the same policies share one chain, so a
//! policy change touches one chain and map elements, not one chain per pod.
//! Sets are concatenations with intervals (the kernel's pipapo), whose
//! elements must not overlap: [`elements`] makes them disjoint.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::ir::{Allow, Peers, Ports, Proto};
use super::nft::{
    ct_established_or_related, ifname_key, ip_addr, is_ipv4, th_dport, AddrField, Batch, Element,
    Expr, Field, Hook, MetaKey, SetSpec, Verdict, VerdictData, HOOK_FORWARD, HOOK_INPUT,
};

/// Our table (family inet).
pub const TABLE: &str = "vpc_cni";
/// Verdict map for traffic to a pod, keyed by its host veth (`oifname`).
pub const INGRESS_MAP: &str = "ingress";
/// Verdict map for traffic from a pod, keyed by its host veth (`iifname`).
pub const EGRESS_MAP: &str = "egress";
/// Chain that drops everything (pods not known yet, in strict mode).
pub const DENY_CHAIN: &str = "deny";

/// Which way traffic flows relative to the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// To the pod: the peer is the source.
    Ingress,
    /// From the pod: the peer is the destination.
    Egress,
}

impl Direction {
    /// The verdict map of this direction.
    pub fn map(self) -> &'static str {
        match self {
            Direction::Ingress => INGRESS_MAP,
            Direction::Egress => EGRESS_MAP,
        }
    }

    fn peer(self) -> AddrField {
        match self {
            Direction::Ingress => AddrField::Source,
            Direction::Egress => AddrField::Destination,
        }
    }
}

/// Creates the table and everything that does not depend on policy.
/// `exclusive`: fail with EEXIST if the table exists (used to find out).
pub fn skeleton(b: &mut Batch, exclusive: bool) {
    b.add_table(TABLE, exclusive);
    for map in [INGRESS_MAP, EGRESS_MAP] {
        b.add_set(
            TABLE,
            &SetSpec {
                name: map.into(),
                fields: vec![Field::IFNAME],
                interval: false,
                verdict_map: true,
            },
        );
    }
    b.add_chain(TABLE, DENY_CHAIN, None);
    b.add_rule(TABLE, DENY_CHAIN, &[Expr::Immediate(Verdict::Drop)]);
    let hook = |hooknum| Hook {
        hooknum,
        priority: 0,
    };
    b.add_chain(TABLE, "forward", Some(hook(HOOK_FORWARD)));
    b.add_chain(TABLE, "input", Some(hook(HOOK_INPUT)));
    let mut established = ct_established_or_related();
    established.push(Expr::Immediate(Verdict::Accept));
    for chain in ["forward", "input"] {
        b.add_rule(TABLE, chain, &established);
        b.add_rule(TABLE, chain, &vmap(MetaKey::IifName, EGRESS_MAP));
    }
    b.add_rule(TABLE, "forward", &vmap(MetaKey::OifName, INGRESS_MAP));
}

fn vmap(key: MetaKey, map: &str) -> Vec<Expr> {
    vec![
        Expr::Meta { key, dreg: 1 },
        Expr::Lookup {
            set: map.into(),
            sreg: 1,
            dreg: Some(0),
        },
    ]
}

/// The map element sending a pod's traffic (one direction) to `chain`.
pub fn pod_element(host_veth: &str, chain: &str) -> Element {
    Element {
        key: ifname_key(host_veth),
        key_end: None,
        verdict: Some(VerdictData::Jump(chain.to_string())),
    }
}

/// The key alone, to delete a pod's element.
pub fn pod_key(host_veth: &str) -> Element {
    Element {
        key: ifname_key(host_veth),
        key_end: None,
        verdict: None,
    }
}

/// What [`policy_chain`] created, to delete it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainObjects {
    /// The chain.
    pub chain: String,
    /// Its sets.
    pub sets: Vec<String>,
}

/// Creates chain `name` enforcing `allows` for `dir`, with its sets.
pub fn policy_chain(b: &mut Batch, dir: Direction, name: &str, allows: &[Allow]) -> ChainObjects {
    let (any_port, with_port) = elements(allows);
    let mut sets = Vec::new();
    let mut rules = Vec::new();
    if !any_port.is_empty() {
        let set = format!("{name}_a");
        b.add_set(TABLE, &concat_set(&set, &[Field::IPV4, Field::PROTO]));
        b.add_elements(TABLE, &set, &any_port);
        rules.push(lookup_rule(dir, &set, false));
        sets.push(set);
    }
    if !with_port.is_empty() {
        let set = format!("{name}_p");
        b.add_set(
            TABLE,
            &concat_set(&set, &[Field::IPV4, Field::PROTO, Field::PORT]),
        );
        b.add_elements(TABLE, &set, &with_port);
        rules.push(lookup_rule(dir, &set, true));
        sets.push(set);
    }
    b.add_chain(TABLE, name, None);
    for r in &rules {
        b.add_rule(TABLE, name, r);
    }
    b.add_rule(TABLE, name, &[Expr::Immediate(Verdict::Drop)]);
    ChainObjects {
        chain: name.to_string(),
        sets,
    }
}

/// Deletes what [`policy_chain`] created (no map element may still jump to it).
pub fn del_policy_chain(b: &mut Batch, objs: &ChainObjects) {
    b.del_chain(TABLE, &objs.chain);
    for s in &objs.sets {
        b.del_set(TABLE, s);
    }
}

fn concat_set(name: &str, fields: &[Field]) -> SetSpec {
    SetSpec {
        name: name.to_string(),
        fields: fields.to_vec(),
        interval: true,
        verdict_map: false,
    }
}

/// `ip saddr|daddr . meta l4proto [. th dport] @set return`, after `meta nfproto ipv4`.
fn lookup_rule(dir: Direction, set: &str, port: bool) -> Vec<Expr> {
    let mut r = is_ipv4();
    r.push(ip_addr(dir.peer(), 8));
    r.push(Expr::Meta {
        key: MetaKey::L4Proto,
        dreg: 9,
    });
    if port {
        r.push(th_dport(10));
    }
    r.push(Expr::Lookup {
        set: set.to_string(),
        sreg: 8,
        dreg: None,
    });
    r.push(Expr::Immediate(Verdict::Return));
    r
}

/// IANA protocol number.
pub fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Sctp => 132,
    }
}

type Range = (u32, u32);

/// The elements of the two sets of a chain: (peers on any port, peers on
/// given ports), pairwise disjoint as the kernel requires.
pub fn elements(allows: &[Allow]) -> (Vec<Element>, Vec<Element>) {
    let mut any_port: Vec<Range> = Vec::new();
    // (proto, ports, addresses)
    let mut boxes: Vec<(u8, Range, Range)> = Vec::new();
    for a in allows {
        let peers: Vec<Range> = match &a.peers {
            Peers::Any => vec![(0, u32::MAX)],
            Peers::Ranges(r) => r
                .iter()
                .map(|(lo, hi)| (u32::from(*lo), u32::from(*hi)))
                .collect(),
        };
        match &a.ports {
            Ports::Any => any_port.extend(peers),
            Ports::Ranges(ports) => {
                for p in ports {
                    for r in &peers {
                        boxes.push((
                            proto_number(p.proto),
                            (u32::from(p.first), u32::from(p.last)),
                            *r,
                        ));
                    }
                }
            }
        }
    }
    let any = merge(any_port)
        .into_iter()
        .map(|(lo, hi)| Element {
            key: key(lo, 0, None),
            key_end: Some(key(hi, 255, None)),
            verdict: None,
        })
        .collect();
    let mut with_port = Vec::new();
    let protos: BTreeSet<u8> = boxes.iter().map(|b| b.0).collect();
    for proto in protos {
        let mine: Vec<(Range, Range)> = boxes
            .iter()
            .filter(|b| b.0 == proto)
            .map(|b| (b.1, b.2))
            .collect();
        for (ports, addrs) in disjoint(&mine) {
            for (lo, hi) in addrs {
                with_port.push(Element {
                    key: key(lo, proto, Some(ports.0 as u16)),
                    key_end: Some(key(hi, proto, Some(ports.1 as u16))),
                    verdict: None,
                });
            }
        }
    }
    (any, with_port)
}

/// Splits (port range × address range) boxes into port segments, each with
/// the merged addresses allowed on it; neighbouring segments with the same
/// addresses are joined. The result covers the same points with no overlap.
fn disjoint(boxes: &[(Range, Range)]) -> Vec<(Range, Vec<Range>)> {
    let mut cuts: BTreeSet<u32> = BTreeSet::new();
    for ((first, last), _) in boxes {
        cuts.insert(*first);
        cuts.insert(last + 1);
    }
    let cuts: Vec<u32> = cuts.into_iter().collect();
    let mut out: Vec<(Range, Vec<Range>)> = Vec::new();
    for w in cuts.windows(2) {
        let seg = (w[0], w[1] - 1);
        let addrs = merge(
            boxes
                .iter()
                .filter(|((f, l), _)| *f <= seg.0 && seg.1 <= *l)
                .map(|(_, a)| *a)
                .collect(),
        );
        if addrs.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((prev, prev_addrs)) if prev.1 + 1 == seg.0 && *prev_addrs == addrs => {
                prev.1 = seg.1;
            }
            _ => out.push((seg, addrs)),
        }
    }
    out
}

/// Sorted union of inclusive ranges, touching ones joined.
fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort_unstable();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// A concatenated key: address, protocol, optional port, each field padded
/// to a 32-bit register.
fn key(addr: u32, proto: u8, port: Option<u16>) -> Vec<u8> {
    let mut k = Ipv4Addr::from(addr).octets().to_vec();
    k.extend_from_slice(&[proto, 0, 0, 0]);
    if let Some(p) = port {
        k.extend_from_slice(&p.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::PortRange;
    use crate::nft::packet::nftables::{
        ExpressionAttribute, Expressions, ListAttribute, NfTablesMessage, Payload, RuleAttribute,
    };

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn tcp(first: u16, last: u16) -> PortRange {
        PortRange {
            proto: Proto::Tcp,
            first,
            last,
        }
    }

    fn ranges(elems: &[Element]) -> Vec<(Vec<u8>, Vec<u8>)> {
        elems
            .iter()
            .map(|e| (e.key.clone(), e.key_end.clone().unwrap()))
            .collect()
    }

    #[test]
    fn any_peer_any_port_is_one_full_range() {
        let (any, ported) = elements(&[Allow {
            peers: Peers::Any,
            ports: Ports::Any,
        }]);
        assert!(ported.is_empty());
        assert_eq!(
            ranges(&any),
            vec![(
                vec![0, 0, 0, 0, 0, 0, 0, 0],
                vec![255, 255, 255, 255, 255, 0, 0, 0]
            )]
        );
    }

    #[test]
    fn overlapping_allows_become_disjoint_elements() {
        // 10.0.0.0-10.0.0.9 on 80-81, and 10.0.0.5-10.0.0.20 on 81-90:
        // port 80 → .0-.9; 81 → .0-.20; 82-90 → .5-.20.
        let allows = [
            Allow {
                peers: Peers::Ranges(vec![(ip("10.0.0.0"), ip("10.0.0.9"))]),
                ports: Ports::Ranges(vec![tcp(80, 81)]),
            },
            Allow {
                peers: Peers::Ranges(vec![(ip("10.0.0.5"), ip("10.0.0.20"))]),
                ports: Ports::Ranges(vec![tcp(81, 90)]),
            },
        ];
        let (_, p) = elements(&allows);
        let got: Vec<(u32, u32, u16, u16)> = p
            .iter()
            .map(|e| {
                let k = &e.key;
                let end = e.key_end.as_ref().unwrap();
                assert_eq!(k[4], 6, "tcp");
                (
                    u32::from_be_bytes(k[0..4].try_into().unwrap()) & 0xff,
                    u32::from_be_bytes(end[0..4].try_into().unwrap()) & 0xff,
                    u16::from_be_bytes([k[8], k[9]]),
                    u16::from_be_bytes([end[8], end[9]]),
                )
            })
            .collect();
        assert_eq!(got, vec![(0, 9, 80, 80), (0, 20, 81, 81), (5, 20, 82, 90)]);
    }

    #[test]
    fn protocols_stay_apart_and_keys_are_register_padded() {
        let allows = [Allow {
            peers: Peers::Ranges(vec![(ip("10.1.2.3"), ip("10.1.2.3"))]),
            ports: Ports::Ranges(vec![
                tcp(53, 53),
                PortRange {
                    proto: Proto::Udp,
                    first: 53,
                    last: 53,
                },
                PortRange {
                    proto: Proto::Sctp,
                    first: 9,
                    last: 9,
                },
            ]),
        }];
        let (_, p) = elements(&allows);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].key, vec![10, 1, 2, 3, 6, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(p[1].key[4], 17);
        assert_eq!(p[2].key[4], 132);
    }

    #[test]
    fn touching_address_ranges_merge() {
        let allows = [
            Allow {
                peers: Peers::Ranges(vec![(ip("10.0.0.1"), ip("10.0.0.1"))]),
                ports: Ports::Any,
            },
            Allow {
                peers: Peers::Ranges(vec![(ip("10.0.0.2"), ip("10.0.0.4"))]),
                ports: Ports::Any,
            },
        ];
        let (a, _) = elements(&allows);
        assert_eq!(a.len(), 1);
        assert_eq!(&a[0].key[..4], &[10, 0, 0, 1]);
        assert_eq!(&a[0].key_end.as_ref().unwrap()[..4], &[10, 0, 0, 4]);
    }

    #[test]
    fn deny_all_is_a_chain_with_only_drop() {
        let mut b = Batch::new();
        let objs = policy_chain(&mut b, Direction::Ingress, "p1", &[]);
        assert!(objs.sets.is_empty());
        let ops = b.ops();
        assert_eq!(ops.len(), 2);
        assert!(matches!(ops[0].nft(), Some(NfTablesMessage::NewChain(_))));
        assert!(matches!(ops[1].nft(), Some(NfTablesMessage::NewRule(_))));
    }

    #[test]
    fn ingress_looks_at_the_source_and_egress_at_the_destination() {
        let allows = [Allow {
            peers: Peers::Any,
            ports: Ports::Ranges(vec![tcp(80, 80)]),
        }];
        for (dir, offset) in [(Direction::Ingress, 12u32), (Direction::Egress, 16)] {
            let mut b = Batch::new();
            let objs = policy_chain(&mut b, dir, "p7", &allows);
            assert_eq!(objs.sets, vec!["p7_p".to_string()]);
            let Some(NfTablesMessage::NewRule(rule)) = b
                .ops()
                .iter()
                .find_map(|o| o.nft().filter(|m| matches!(m, NfTablesMessage::NewRule(_))))
            else {
                panic!("no rule");
            };
            let exprs: Vec<&Expressions> = rule
                .attributes
                .iter()
                .find_map(|a| match a {
                    RuleAttribute::Expressions(l) => Some(l),
                    _ => None,
                })
                .expect("expressions")
                .iter()
                .filter_map(|e| match e {
                    ListAttribute::Element(attrs) => attrs.iter().find_map(|a| match a {
                        ExpressionAttribute::Data(d) => Some(d),
                        _ => None,
                    }),
                    _ => None,
                })
                .collect();
            let names: Vec<&str> = exprs
                .iter()
                .map(|e| match e {
                    Expressions::Meta(_) => "meta",
                    Expressions::Cmp(_) => "cmp",
                    Expressions::Payload(_) => "payload",
                    Expressions::Lookup(_) => "lookup",
                    Expressions::Immediate(_) => "immediate",
                    _ => "other",
                })
                .collect();
            assert_eq!(
                names,
                [
                    "meta",
                    "cmp",
                    "payload",
                    "meta",
                    "payload",
                    "lookup",
                    "immediate"
                ]
            );
            let Expressions::Payload(payload) = exprs[2] else {
                panic!("not a payload")
            };
            assert!(payload.contains(&Payload::Offset(offset)));
        }
    }

    #[test]
    fn the_skeleton_hooks_forward_and_input() {
        let mut b = Batch::new();
        skeleton(&mut b, true);
        let chains: Vec<String> = b
            .ops()
            .iter()
            .filter(|o| matches!(o.nft(), Some(NfTablesMessage::NewChain(_))))
            .map(|o| o.label.clone())
            .collect();
        assert_eq!(
            chains,
            [
                "add chain inet vpc_cni deny",
                "add chain inet vpc_cni forward",
                "add chain inet vpc_cni input"
            ]
        );
    }
}
