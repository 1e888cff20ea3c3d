//! ENI and address limits per EC2 instance type.
//!
//! The table is embedded so that `ipamd max-pods` and the simulator work
//! offline and give the same answer as AWS's published `eni-max-pods.txt`
//! (amazon-vpc-cni-k8s `misc/eni-max-pods.txt`, checked row by row by the
//! tests below). Online, the cloud's `resolve` asks EC2 (`DescribeInstanceTypes`)
//! through the cloud crate's `InstanceTypes` first.

/// How many ENIs and IPv4 addresses an instance type may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLimits {
    /// The instance type, e.g. `m5.large`.
    pub name: String,
    /// Network interfaces the instance can have attached, primary included.
    pub max_enis: u32,
    /// IPv4 addresses per ENI, the ENI's own primary address included.
    pub ipv4_per_eni: u32,
    /// Virtual CPUs (aws-node scales some defaults by it).
    pub vcpus: u32,
}

/// One row of the table: name, ENIs, IPv4 addresses per ENI, vCPUs.
type Row = (&'static str, u32, u32, u32);

/// AWS's published values ("IP addresses per network interface per instance
/// type" in the EC2 user guide).
const TABLE: &[Row] = &[
    ("t3.nano", 2, 2, 2),
    ("t3.micro", 2, 2, 2),
    ("t3.small", 3, 4, 2),
    ("t3.medium", 3, 6, 2),
    ("t3.large", 3, 12, 2),
    ("t3.xlarge", 4, 15, 4),
    ("t3.2xlarge", 4, 15, 8),
    ("c5.large", 3, 10, 2),
    ("c5.xlarge", 4, 15, 4),
    ("c5.2xlarge", 4, 15, 8),
    ("c5.4xlarge", 8, 30, 16),
    ("c5.9xlarge", 8, 30, 36),
    ("c5.12xlarge", 8, 30, 48),
    ("c5.18xlarge", 15, 50, 72),
    ("c5.24xlarge", 15, 50, 96),
    ("m5.large", 3, 10, 2),
    ("m5.xlarge", 4, 15, 4),
    ("m5.2xlarge", 4, 15, 8),
    ("m5.4xlarge", 8, 30, 16),
    ("m5.8xlarge", 8, 30, 32),
    ("m5.12xlarge", 8, 30, 48),
    ("m5.16xlarge", 15, 50, 64),
    ("m5.24xlarge", 15, 50, 96),
    ("r5.large", 3, 10, 2),
    ("r5.xlarge", 4, 15, 4),
    ("r5.2xlarge", 4, 15, 8),
    ("r5.4xlarge", 8, 30, 16),
    ("r5.8xlarge", 8, 30, 32),
    ("r5.12xlarge", 8, 30, 48),
    ("r5.16xlarge", 15, 50, 64),
    ("r5.24xlarge", 15, 50, 96),
    ("m5.metal", 15, 50, 96),
    ("c5.metal", 15, 50, 96),
    ("r5.metal", 15, 50, 96),
    ("x1.16xlarge", 8, 30, 64),
    ("x1.32xlarge", 8, 30, 128),
    ("x1e.xlarge", 3, 10, 4),
    ("x1e.2xlarge", 4, 15, 8),
    ("x1e.4xlarge", 4, 15, 16),
    ("x1e.8xlarge", 4, 15, 32),
    ("x1e.16xlarge", 8, 30, 64),
    ("x1e.32xlarge", 8, 30, 128),
    ("p3.2xlarge", 4, 15, 8),
    ("p3.8xlarge", 8, 30, 32),
    ("p3.16xlarge", 8, 30, 64),
    ("p3dn.24xlarge", 15, 50, 96),
    // P2 and H1 are no longer in the current eni-max-pods.txt; values from
    // the EC2 user guide (P2 matches the file's older revisions; those gave
    // h1.16xlarge 452 because they capped ENIs at 31 addresses).
    ("p2.xlarge", 4, 15, 4),
    ("p2.8xlarge", 8, 30, 32),
    ("p2.16xlarge", 8, 30, 64),
    ("h1.2xlarge", 4, 15, 8),
    ("h1.4xlarge", 8, 30, 16),
    ("h1.8xlarge", 8, 30, 32),
    ("h1.16xlarge", 15, 50, 64),
    ("d2.xlarge", 4, 15, 4),
    ("d2.2xlarge", 4, 15, 8),
    ("d2.4xlarge", 8, 30, 16),
    ("d2.8xlarge", 8, 30, 36),
    ("i3.large", 3, 10, 2),
    ("i3.xlarge", 4, 15, 4),
    ("i3.2xlarge", 4, 15, 8),
    ("i3.4xlarge", 8, 30, 16),
    ("i3.8xlarge", 8, 30, 32),
    ("i3.16xlarge", 15, 50, 64),
    ("i3.metal", 15, 50, 72),
];

/// The limits of `instance_type` (exact, case-sensitive name, as EC2 spells
/// it), or `None` if the table does not know it.
pub fn lookup(instance_type: &str) -> Option<InstanceLimits> {
    TABLE
        .iter()
        .find(|row| row.0 == instance_type)
        .map(|&(name, max_enis, ipv4_per_eni, vcpus)| InstanceLimits {
            name: name.to_string(),
            max_enis,
            ipv4_per_eni,
            vcpus,
        })
}

/// Every instance type [`lookup`] knows, in table order.
pub fn known_types() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|row| row.0)
}

impl InstanceLimits {
    /// The most pods the node can run in secondary-IP mode, with aws-node's
    /// formula: each ENI keeps its primary address for itself, and two
    /// host-network pods (aws-node and kube-proxy) need no VPC address.
    pub fn max_pods(&self) -> u32 {
        self.max_enis * self.ipv4_per_eni.saturating_sub(1) + 2
    }

    /// Secondary addresses one ENI may hold: all but its primary.
    pub fn secondaries_per_eni(&self) -> u32 {
        self.ipv4_per_eni.saturating_sub(1)
    }

    /// The most pods in prefix mode (aws's max-pods-calculator): every slot
    /// a /28, capped at [`pd_pod_cap`].
    pub fn max_pods_pd(&self) -> u32 {
        (self.max_enis * self.secondaries_per_eni() * 16 + 2).min(pd_pod_cap(self.vcpus))
    }

    /// [`Self::max_pods`] or [`Self::max_pods_pd`].
    pub fn max_pods_for(&self, prefix_delegation: bool) -> u32 {
        if prefix_delegation {
            self.max_pods_pd()
        } else {
            self.max_pods()
        }
    }
}

/// The max-pods cap AWS applies in prefix mode: 110 below 30 vCPUs, 250
/// from 30 up (kubelet's and EKS's guidance for pod density).
pub fn pd_pod_cap(vcpus: u32) -> u32 {
    if vcpus < 30 {
        110
    } else {
        250
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_pods(instance_type: &str) -> u32 {
        lookup(instance_type).expect("known type").max_pods()
    }

    #[test]
    fn max_pods_match_aws_published_values() {
        assert_eq!(max_pods("t3.nano"), 4);
        assert_eq!(max_pods("t3.medium"), 17);
        assert_eq!(max_pods("m5.large"), 29);
        assert_eq!(max_pods("c5.xlarge"), 58);
        assert_eq!(max_pods("m5.4xlarge"), 234);
        assert_eq!(max_pods("m5.24xlarge"), 737);
    }

    /// Rows of amazon-vpc-cni-k8s `misc/eni-max-pods.txt` (current revision;
    /// P2 from an older one, H1 from the EC2 user guide's limits).
    const PUBLISHED: &[(&str, u32)] = &[
        ("t3.nano", 4),
        ("t3.micro", 4),
        ("t3.small", 11),
        ("t3.medium", 17),
        ("t3.large", 35),
        ("t3.xlarge", 58),
        ("t3.2xlarge", 58),
        ("c5.large", 29),
        ("c5.xlarge", 58),
        ("c5.2xlarge", 58),
        ("c5.4xlarge", 234),
        ("c5.9xlarge", 234),
        ("c5.12xlarge", 234),
        ("c5.18xlarge", 737),
        ("c5.24xlarge", 737),
        ("c5.metal", 737),
        ("m5.large", 29),
        ("m5.xlarge", 58),
        ("m5.2xlarge", 58),
        ("m5.4xlarge", 234),
        ("m5.8xlarge", 234),
        ("m5.12xlarge", 234),
        ("m5.16xlarge", 737),
        ("m5.24xlarge", 737),
        ("m5.metal", 737),
        ("r5.large", 29),
        ("r5.xlarge", 58),
        ("r5.2xlarge", 58),
        ("r5.4xlarge", 234),
        ("r5.8xlarge", 234),
        ("r5.12xlarge", 234),
        ("r5.16xlarge", 737),
        ("r5.24xlarge", 737),
        ("r5.metal", 737),
        ("x1.16xlarge", 234),
        ("x1.32xlarge", 234),
        ("x1e.xlarge", 29),
        ("x1e.2xlarge", 58),
        ("x1e.4xlarge", 58),
        ("x1e.8xlarge", 58),
        ("x1e.16xlarge", 234),
        ("x1e.32xlarge", 234),
        ("p3.2xlarge", 58),
        ("p3.8xlarge", 234),
        ("p3.16xlarge", 234),
        ("p3dn.24xlarge", 737),
        ("p2.xlarge", 58),
        ("p2.8xlarge", 234),
        ("p2.16xlarge", 234),
        ("h1.2xlarge", 58),
        ("h1.4xlarge", 234),
        ("h1.8xlarge", 234),
        ("h1.16xlarge", 737),
        ("d2.xlarge", 58),
        ("d2.2xlarge", 58),
        ("d2.4xlarge", 234),
        ("d2.8xlarge", 234),
        ("i3.large", 29),
        ("i3.xlarge", 58),
        ("i3.2xlarge", 58),
        ("i3.4xlarge", 234),
        ("i3.8xlarge", 234),
        ("i3.16xlarge", 737),
        ("i3.metal", 737),
    ];

    #[test]
    fn every_row_matches_the_published_file() {
        assert_eq!(PUBLISHED.len(), TABLE.len(), "every row checked");
        for (name, pods) in PUBLISHED {
            assert_eq!(max_pods(name), *pods, "{name}");
        }
    }

    #[test]
    fn prefix_mode_multiplies_by_16_and_caps_by_vcpus() {
        let pd = |t: &str| lookup(t).unwrap().max_pods_pd();
        assert_eq!(pd("t3.nano"), 34, "2 x 1 x 16 + 2, under the cap");
        assert_eq!(pd("t3.medium"), 110);
        assert_eq!(pd("m5.large"), 110);
        assert_eq!(pd("m5.8xlarge"), 250, "32 vCPUs: the higher cap");
        assert_eq!(pd("c5.4xlarge"), 110, "16 vCPUs");
        assert_eq!(pd("d2.8xlarge"), 250, "36 vCPUs");
        assert_eq!(lookup("m5.large").unwrap().max_pods_for(false), 29);
    }

    #[test]
    fn lookup_returns_the_row() {
        let l = lookup("t3.medium").expect("known type");
        assert_eq!(
            l,
            InstanceLimits {
                name: "t3.medium".into(),
                max_enis: 3,
                ipv4_per_eni: 6,
                vcpus: 2,
            }
        );
        assert_eq!(l.secondaries_per_eni(), 5);
    }

    #[test]
    fn unknown_type_is_none() {
        assert_eq!(lookup("m5.huge"), None);
        assert_eq!(lookup(""), None);
        assert_eq!(lookup("M5.LARGE"), None);
    }

    #[test]
    fn r5_matches_m5() {
        for m5 in known_types().filter(|t| t.starts_with("m5.")) {
            let size = &m5[3..];
            let (m, r) = (lookup(m5).unwrap(), lookup(&format!("r5.{size}")).unwrap());
            assert_eq!(
                (m.max_enis, m.ipv4_per_eni, m.vcpus),
                (r.max_enis, r.ipv4_per_eni, r.vcpus),
                "{size}"
            );
        }
    }

    #[test]
    fn known_types_are_unique_and_all_resolve() {
        let all: Vec<_> = known_types().collect();
        assert_eq!(all.len(), TABLE.len());
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert!(all.iter().all(|t| lookup(t).is_some()));
    }
}
