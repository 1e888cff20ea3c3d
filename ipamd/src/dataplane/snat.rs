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
//! The table `ip vpc_cni_nat` is replaced whole in one `nft -f` transaction.
//! It is written once at start-up, never on the pod path, so one `nft`
//! process (≈ 3 ms) costs nothing a pod waits for, and the kernel's own
//! parser checks what we write.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnetwork::Ipv4Network;

/// The nftables table we own for SNAT.
pub const TABLE: &str = "vpc_cni_nat";
/// Packet mark of pod traffic leaving the VPC (aws-node's default connmark).
pub const MARK: u32 = 0x80;
/// Priority of `fwmark 0x80/0x80 lookup main` (aws-node's `hostRulePriority`).
pub const MARK_RULE_PRIORITY: u32 = 1024;

/// SNAT settings (aws-node's variables).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnatSettings {
    /// `AWS_VPC_K8S_CNI_EXTERNALSNAT` (default false).
    pub external: bool,
    /// `AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS`: comma-separated IPv4 CIDRs that
    /// keep the pod's address although they are outside the VPC.
    pub exclude: Vec<Ipv4Network>,
}

impl SnatSettings {
    /// Reads the two variables through `get`; an invalid value names itself.
    pub fn from_vars<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, (String, String, String)> {
        let bad = |var: &str, v: &str, why: &str| (var.to_string(), v.to_string(), why.to_string());
        let external = match get("AWS_VPC_K8S_CNI_EXTERNALSNAT") {
            None => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(bad(
                        "AWS_VPC_K8S_CNI_EXTERNALSNAT",
                        v,
                        "expected true or false",
                    ))
                }
            },
        };
        let mut exclude = Vec::new();
        if let Some(v) = get("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS") {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let cidr: Ipv4Network = item.parse().map_err(|_| {
                    bad(
                        "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
                        v,
                        &format!("{item:?} is not an IPv4 CIDR"),
                    )
                })?;
                // Normalised, so 10.1.2.3/16 means 10.1.0.0/16 to nft too.
                let net = Ipv4Network::new(cidr.network(), cidr.prefix()).expect("same prefix");
                exclude.push(net);
            }
        }
        Ok(Self { external, exclude })
    }
}

/// Why SNAT could not be programmed.
#[derive(Debug, thiserror::Error)]
pub enum SnatError {
    /// `nft` could not be run.
    #[error("running nft: {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` refused the ruleset.
    #[error("nft refused the SNAT table: {0}")]
    Nft(String),
    /// The policy-routing rule for marked traffic.
    #[error("ip rule fwmark {MARK:#x}: {0}")]
    Rule(String),
}

/// The whole `nft -f` script: (re)creates the table, or only removes it when
/// SNAT is external. Pure, so it is checked without root.
pub fn script(settings: &SnatSettings, vpc_cidrs: &[Ipv4Network], primary_ip: Ipv4Addr) -> String {
    // Declaring the table first makes the delete valid when it is absent.
    let mut s = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    if settings.external {
        return s;
    }
    let keep: Vec<String> = vpc_cidrs
        .iter()
        .chain(&settings.exclude)
        .map(|c| c.to_string())
        .collect();
    s.push_str(&format!("table ip {TABLE} {{\n"));
    // auto-merge: an excluded CIDR may overlap a VPC CIDR.
    s.push_str("  set no_snat {\n    type ipv4_addr\n    flags interval\n    auto-merge\n");
    if !keep.is_empty() {
        s.push_str(&format!("    elements = {{ {} }}\n", keep.join(", ")));
    }
    s.push_str("  }\n");
    s.push_str(&format!(
        "  chain mark_egress {{\n    type filter hook prerouting priority mangle; policy accept;\n    \
         iifname \"eni*\" ip daddr != @no_snat meta mark set meta mark | {MARK:#x}\n  }}\n"
    ));
    s.push_str(&format!(
        "  chain egress_snat {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ip daddr @no_snat return\n    fib daddr type local return\n    \
         snat to {primary_ip} fully-random\n  }}\n}}\n"
    ));
    s
}

/// Replaces the table in the calling thread's network namespace.
pub fn program(
    settings: &SnatSettings,
    vpc_cidrs: &[Ipv4Network],
    primary_ip: Ipv4Addr,
) -> Result<(), SnatError> {
    let text = script(settings, vpc_cidrs, primary_ip);
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(SnatError::Spawn)?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .map_err(SnatError::Spawn)?;
    let out = child.wait_with_output().map_err(SnatError::Spawn)?;
    if !out.status.success() {
        return Err(SnatError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    #[test]
    fn settings_parse_and_name_bad_values() {
        let s = SnatSettings::from_vars(get(&[
            ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "false"),
            (
                "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
                "192.168.0.0/16, 172.16.5.1/12",
            ),
        ]))
        .unwrap();
        assert!(!s.external);
        assert_eq!(
            s.exclude,
            vec![
                "192.168.0.0/16".parse().unwrap(),
                "172.16.0.0/12".parse().unwrap()
            ]
        );
        assert!(
            SnatSettings::from_vars(get(&[("AWS_VPC_K8S_CNI_EXTERNALSNAT", "TRUE")]))
                .unwrap()
                .external
        );
        let e =
            SnatSettings::from_vars(get(&[("AWS_VPC_K8S_CNI_EXTERNALSNAT", "yes")])).unwrap_err();
        assert_eq!(e.0, "AWS_VPC_K8S_CNI_EXTERNALSNAT");
        let e = SnatSettings::from_vars(get(&[(
            "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
            "10.0.0.0/8,fd00::/8",
        )]))
        .unwrap_err();
        assert_eq!(e.0, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS");
        assert!(e.2.contains("fd00::/8"));
    }

    #[test]
    fn script_snats_outside_the_vpc_and_exclusions() {
        let s = script(
            &SnatSettings {
                external: false,
                exclude: vec!["192.168.0.0/16".parse().unwrap()],
            },
            &["10.0.0.0/16".parse().unwrap()],
            Ipv4Addr::new(10, 0, 0, 10),
        );
        assert!(s.starts_with("table ip vpc_cni_nat\ndelete table ip vpc_cni_nat\n"));
        assert!(s.contains("elements = { 10.0.0.0/16, 192.168.0.0/16 }"));
        assert!(s.contains("ip daddr != @no_snat meta mark set meta mark | 0x80"));
        assert!(s.contains("snat to 10.0.0.10 fully-random"));
    }

    #[test]
    fn external_snat_only_removes_the_table() {
        let s = script(
            &SnatSettings {
                external: true,
                exclude: vec![],
            },
            &["10.0.0.0/16".parse().unwrap()],
            Ipv4Addr::new(10, 0, 0, 10),
        );
        assert_eq!(s, "table ip vpc_cni_nat\ndelete table ip vpc_cni_nat\n");
    }
}
