//! SNAT of pod traffic that leaves the VPC, programmed once at start-up.
//!
//! As aws-node does: a packet to a destination outside the VPC's CIDRs (and
//! outside `AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS`) leaves with the node's
//! primary address, unless `AWS_VPC_K8S_CNI_EXTERNALSNAT=true` (a NAT
//! gateway does it). Such a packet from a pod on a secondary ENI must leave
//! through the primary ENI, whose address it now carries: it is marked
//! (0x80, aws-node's connmark bit) on the way in from the pod's veth, and
//! `ip rule fwmark 0x80/0x80 lookup main` (priority 1024, aws-node's) wins
//! over the pod's `from <pod> lookup <eni table>` (1536).
//!
//! aws-node uses a conntrack mark because iptables' nat table sees only a
//! connection's first packet; an nftables filter chain at mangle priority
//! sees every packet, so a plain packet mark is enough here.
//!
//! The table `ip vpc_cni_nat` is replaced whole in one nf_tables
//! transaction sent over netlink (`vpc_cni_netlink::nft`), the same one
//! `nft -f` would send for the script in [`batch`]'s comment: an old table
//! (from this or an earlier version) is found by name and replaced, the
//! kernel applies all of it or none, and no `nft` process is spawned.
//! It is written once at start-up, never on the pod path.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use vpc_cni_netlink::nft::{
    fib_daddr_is_local, iifname_prefix, ip_addr, reg, set_mark_bits, snat_to, AddrField, Batch,
    ChainType, Expr, Family, Field, Hook, NftSocket, Verdict, HOOK_POSTROUTING, HOOK_PREROUTING,
    PRIORITY_MANGLE, PRIORITY_SRCNAT,
};

/// The nftables table we own for SNAT (family `ip`).
pub const TABLE: &str = "vpc_cni_nat";
/// Destinations that keep the pod's address: the VPC and the exclusions.
pub const NO_SNAT_SET: &str = "no_snat";
/// Marks pod traffic leaving the VPC (prerouting, mangle priority).
pub const MARK_CHAIN: &str = "mark_egress";
/// Rewrites its source (postrouting, srcnat priority).
pub const SNAT_CHAIN: &str = "egress_snat";
/// Host veths are `eni<11 hex>` ([`super::naming`]).
const HOST_VETH_PREFIX: &str = "eni";
/// Packet mark of pod traffic leaving the VPC (aws-node's default connmark).
pub const MARK: u32 = 0x80;
/// Priority of `fwmark 0x80/0x80 lookup main` (aws-node's `hostRulePriority`).
pub const MARK_RULE_PRIORITY: u32 = 1024;

/// SNAT settings (aws-node's variables), read by [`crate::config`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnatSettings {
    /// `AWS_VPC_K8S_CNI_EXTERNALSNAT` (default false).
    pub external: bool,
    /// `AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS`: comma-separated IPv4 CIDRs that
    /// keep the pod's address although they are outside the VPC.
    pub exclude: Vec<Ipv4Network>,
}

/// Why SNAT could not be programmed.
#[derive(Debug, thiserror::Error)]
pub enum SnatError {
    /// The kernel refused the transaction (re)creating the table, or the
    /// nf_tables socket could not be opened.
    #[error("programming the SNAT table: {0}")]
    Nft(#[source] vpc_cni_netlink::Error),
    /// The policy-routing rule for marked traffic.
    #[error("ip rule fwmark {MARK:#x}: {0}")]
    Rule(#[source] Box<super::DataplaneError>),
}

/// The whole transaction: (re)creates the table, or only removes it when
/// SNAT is external. Pure, so it is checked without root. What `nft -f`
/// would make of it:
///
/// ```text
/// table ip vpc_cni_nat            # declaring it first makes the delete
/// delete table ip vpc_cni_nat     # valid when it is absent
/// table ip vpc_cni_nat {
///   set no_snat { type ipv4_addr; flags interval; auto-merge;
///                 elements = { <VPC CIDRs>, <excluded CIDRs> } }
///   chain mark_egress { type filter hook prerouting priority mangle; policy accept;
///     iifname "eni*" ip daddr != @no_snat meta mark set meta mark | 0x80 }
///   chain egress_snat { type nat hook postrouting priority srcnat; policy accept;
///     ip daddr @no_snat return
///     fib daddr type local return
///     snat to <primary IP> fully-random }
/// }
/// ```
pub fn batch(settings: &SnatSettings, vpc_cidrs: &[Ipv4Network], primary_ip: Ipv4Addr) -> Batch {
    let mut b = Batch::for_family(Family::Ip);
    b.add_table(TABLE, false);
    b.del_table(TABLE);
    if settings.external {
        return b;
    }
    b.add_table(TABLE, false);
    b.add_base_chain(
        TABLE,
        MARK_CHAIN,
        ChainType::Filter,
        Hook {
            hooknum: HOOK_PREROUTING,
            priority: PRIORITY_MANGLE,
        },
    );
    b.add_base_chain(
        TABLE,
        SNAT_CHAIN,
        ChainType::Nat,
        Hook {
            hooknum: HOOK_POSTROUTING,
            priority: PRIORITY_SRCNAT,
        },
    );
    b.add_merged_interval_set(TABLE, NO_SNAT_SET, Field::IPV4);
    let keep = merged_ranges(vpc_cidrs.iter().chain(&settings.exclude));
    if !keep.is_empty() {
        b.add_ipv4_intervals(TABLE, NO_SNAT_SET, &keep);
    }
    let daddr = ip_addr(AddrField::Destination, reg::R1);
    let mut mark = iifname_prefix(HOST_VETH_PREFIX);
    mark.push(daddr.clone());
    mark.push(Expr::NotInSet {
        set: NO_SNAT_SET.into(),
        sreg: reg::R1,
    });
    mark.extend(set_mark_bits(MARK));
    b.add_rule(TABLE, MARK_CHAIN, &mark);
    b.add_rule(
        TABLE,
        SNAT_CHAIN,
        &[
            daddr,
            Expr::Lookup {
                set: NO_SNAT_SET.into(),
                sreg: reg::R1,
                dreg: None,
            },
            Expr::Immediate(Verdict::Return),
        ],
    );
    let mut local = fib_daddr_is_local();
    local.push(Expr::Immediate(Verdict::Return));
    b.add_rule(TABLE, SNAT_CHAIN, &local);
    b.add_rule(TABLE, SNAT_CHAIN, &snat_to(primary_ip, true));
    b
}

/// The CIDRs as address ranges, sorted, with overlapping and adjacent
/// ones merged: what nft's `auto-merge` makes of them (an excluded CIDR
/// may overlap a VPC CIDR; the kernel's interval set takes no overlaps).
pub fn merged_ranges<'a>(
    cidrs: impl IntoIterator<Item = &'a Ipv4Network>,
) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut ranges: Vec<(u32, u32)> = cidrs
        .into_iter()
        .map(|c| (u32::from(c.network()), u32::from(c.broadcast())))
        .collect();
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out.into_iter()
        .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
        .collect()
}

/// Replaces the table in the calling thread's network namespace.
pub fn program(
    settings: &SnatSettings,
    vpc_cidrs: &[Ipv4Network],
    primary_ip: Ipv4Addr,
) -> Result<(), SnatError> {
    let mut sock = NftSocket::open().map_err(SnatError::Nft)?;
    sock.apply(&batch(settings, vpc_cidrs, primary_ip))
        .map_err(SnatError::Nft)
}

#[cfg(test)]
mod tests {
    use super::*;

    use vpc_cni_netlink::nft::packet::nftables::NfTablesMessage;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn labels(b: &Batch) -> Vec<&str> {
        b.ops().iter().map(|o| o.label.as_str()).collect()
    }

    #[test]
    fn the_table_is_replaced_whole_in_one_transaction() {
        let b = batch(
            &SnatSettings {
                external: false,
                exclude: vec![net("192.168.0.0/16")],
            },
            &[net("10.0.0.0/16")],
            Ipv4Addr::new(10, 0, 0, 10),
        );
        assert_eq!(
            labels(&b),
            [
                "add table ip vpc_cni_nat",
                "delete table ip vpc_cni_nat",
                "add table ip vpc_cni_nat",
                "add chain ip vpc_cni_nat mark_egress",
                "add chain ip vpc_cni_nat egress_snat",
                "add set ip vpc_cni_nat no_snat",
                "add 5 elements in set ip vpc_cni_nat no_snat",
                "add rule ip vpc_cni_nat mark_egress",
                "add rule ip vpc_cni_nat egress_snat",
                "add rule ip vpc_cni_nat egress_snat",
                "add rule ip vpc_cni_nat egress_snat",
            ]
        );
        let Some(NfTablesMessage::NewRule(mark)) = b.ops()[7].nft() else {
            panic!("not a rule")
        };
        let exprs = format!("{mark:?}");
        for want in [
            "Iifname",
            "Offset(16)",
            "Flags(1)",
            "Mark",
            "SourceRegister",
        ] {
            assert!(exprs.contains(want), "{want} in {exprs}");
        }
        let Some(NfTablesMessage::NewRule(snat)) = b.ops()[10].nft() else {
            panic!("not a rule")
        };
        let exprs = format!("{snat:?}");
        assert!(exprs.contains("[10, 0, 0, 10]"), "{exprs}");
        assert!(exprs.contains("\"nat\""), "{exprs}");
    }

    #[test]
    fn external_snat_only_removes_the_table() {
        let b = batch(
            &SnatSettings {
                external: true,
                exclude: vec![],
            },
            &[net("10.0.0.0/16")],
            Ipv4Addr::new(10, 0, 0, 10),
        );
        assert_eq!(
            labels(&b),
            ["add table ip vpc_cni_nat", "delete table ip vpc_cni_nat"]
        );
    }

    #[test]
    fn no_cidrs_is_an_empty_set() {
        let b = batch(&SnatSettings::default(), &[], Ipv4Addr::new(10, 0, 0, 10));
        assert!(!labels(&b).iter().any(|l| l.contains("elements")));
    }

    #[test]
    fn ranges_merge_like_auto_merge() {
        let r = |a: &str, b: &str| (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(
            merged_ranges(&[
                net("192.168.0.0/16"),
                net("10.0.5.0/24"),
                net("10.0.0.0/16"),
                net("10.1.0.0/16"),
                net("0.0.0.0/8"),
            ]),
            vec![
                r("0.0.0.0", "0.255.255.255"),
                r("10.0.0.0", "10.1.255.255"),
                r("192.168.0.0", "192.168.255.255"),
            ]
        );
        assert_eq!(
            merged_ranges(&[net("0.0.0.0/0"), net("10.0.0.0/8")]),
            vec![r("0.0.0.0", "255.255.255.255")]
        );
    }
}
