//! ENI and address limits per EC2 instance type.
//!
//! The table is embedded rather than asked of EC2 (`DescribeInstanceTypes`)
//! so that `ipamd max-pods` and the simulator work offline and give the same
//! answer as AWS's published `eni-max-pods.txt`.

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
        assert_eq!(all.len(), 31);
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert!(all.iter().all(|t| lookup(t).is_some()));
    }
}
