//! The node's identity from the instance metadata service (IMDSv2, through
//! aws-config's client, which honours `AWS_EC2_METADATA_SERVICE_ENDPOINT`).

use std::net::Ipv4Addr;

use aws_config::imds::client::error::ImdsError;
use aws_config::imds::Client;
use ipnetwork::Ipv4Network;

use crate::{CloudError, EniId, MacAddr, Subnet};

/// What IMDS says about this instance and its primary ENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `instance-id`.
    pub instance_id: String,
    /// `instance-type`.
    pub instance_type: String,
    /// `placement/region` (empty if IMDS has none).
    pub region: String,
    /// `local-ipv4`: the node's primary address.
    pub primary_ip: Ipv4Addr,
    /// `mac`: the primary ENI's MAC.
    pub primary_mac: MacAddr,
    /// The primary ENI's `interface-id`.
    pub primary_eni: EniId,
    /// The primary ENI's subnet (`subnet-id`, `subnet-ipv4-cidr-block`).
    pub subnet: Subnet,
    /// `vpc-id`.
    pub vpc_id: String,
    /// `vpc-ipv4-cidr-blocks`.
    pub vpc_cidrs: Vec<Ipv4Network>,
    /// The primary ENI's `security-group-ids`.
    pub security_groups: Vec<String>,
}

const META: &str = "/latest/meta-data/";

async fn get(client: &Client, path: &str) -> Result<String, CloudError> {
    client
        .get(format!("{META}{path}"))
        .await
        .map(|s| s.as_ref().trim().to_string())
        .map_err(|e| CloudError::Api {
            operation: "IMDS",
            message: match &e {
                // Its Display carries the whole response; the status is enough.
                ImdsError::ErrorResponse(r) => {
                    format!("{path}: HTTP {}", r.response().status().as_u16())
                }
                other => format!("{path}: {other}"),
            },
        })
}

fn bad(path: &str, value: &str, what: &str) -> CloudError {
    CloudError::Api {
        operation: "IMDS",
        message: format!("{path}: {value:?} is not {what}"),
    }
}

/// Parses `0a:1b:2c:3d:4e:5f`.
pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(out))
}

/// One CIDR per line (IMDS's list format).
pub fn parse_cidrs(path: &str, s: &str) -> Result<Vec<Ipv4Network>, CloudError> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().map_err(|_| bad(path, l, "an IPv4 CIDR")))
        .collect()
}

/// Reads the identity. Each value is one small GET; none is logged whole.
pub async fn identity(client: &Client) -> Result<Identity, CloudError> {
    let instance_id = get(client, "instance-id").await?;
    let instance_type = get(client, "instance-type").await?;
    let region = get(client, "placement/region").await.unwrap_or_default();
    let local = get(client, "local-ipv4").await?;
    let primary_ip = local
        .parse()
        .map_err(|_| bad("local-ipv4", &local, "an IPv4 address"))?;
    let mac_text = get(client, "mac").await?;
    let primary_mac = parse_mac(&mac_text).ok_or_else(|| bad("mac", &mac_text, "a MAC"))?;
    let base = format!("network/interfaces/macs/{mac_text}/");
    let primary_eni = EniId(get(client, &format!("{base}interface-id")).await?);
    let subnet_id = get(client, &format!("{base}subnet-id")).await?;
    let path = format!("{base}subnet-ipv4-cidr-block");
    let cidr_text = get(client, &path).await?;
    let cidr = cidr_text
        .parse()
        .map_err(|_| bad(&path, &cidr_text, "an IPv4 CIDR"))?;
    let vpc_id = get(client, &format!("{base}vpc-id")).await?;
    let path = format!("{base}vpc-ipv4-cidr-blocks");
    let vpc_cidrs = parse_cidrs(&path, &get(client, &path).await?)?;
    let security_groups = get(client, &format!("{base}security-group-ids"))
        .await?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Identity {
        instance_id,
        instance_type,
        region,
        primary_ip,
        primary_mac,
        primary_eni,
        subnet: Subnet {
            id: subnet_id,
            cidr,
        },
        vpc_id,
        vpc_cidrs,
        security_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_cidrs_parse() {
        assert_eq!(
            parse_mac("0a:1b:2c:3d:4e:5f"),
            Some(MacAddr([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]))
        );
        assert_eq!(parse_mac("0a:1b:2c:3d:4e"), None);
        assert_eq!(parse_mac("0a:1b:2c:3d:4e:5f:00"), None);
        assert_eq!(parse_mac("zz:1b:2c:3d:4e:5f"), None);
        assert_eq!(
            parse_cidrs("p", "10.0.0.0/16\n100.64.0.0/16\n").unwrap(),
            vec![
                "10.0.0.0/16".parse().unwrap(),
                "100.64.0.0/16".parse().unwrap()
            ]
        );
        assert!(parse_cidrs("p", "10.0.0.0/16\nbogus").is_err());
    }
}
