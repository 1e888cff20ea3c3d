//! Interval arithmetic on IPv4 addresses and ports, kept here so the model
//! (ipBlock `except`) and the evaluator (canonical output) share one
//! implementation.

use std::net::Ipv4Addr;

use crate::policy::ir::{PortRange, Proto};

/// Sorts and merges inclusive `u32` intervals (overlapping or adjacent).
pub fn merge_u32(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Removes every interval of `minus` from `from`; both inclusive.
pub fn subtract_u32(from: &[(u32, u32)], minus: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let minus = merge_u32(minus.to_vec());
    let mut out = Vec::new();
    for &(mut a, b) in &merge_u32(from.to_vec()) {
        let mut alive = true;
        for &(x, y) in &minus {
            if y < a || x > b {
                continue;
            }
            if x > a {
                out.push((a, x - 1));
            }
            if y >= b {
                alive = false;
                break;
            }
            a = y + 1;
        }
        if alive {
            out.push((a, b));
        }
    }
    out
}

/// Canonical form of address intervals.
pub fn merge_addrs(v: Vec<(Ipv4Addr, Ipv4Addr)>) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    merge_u32(v.into_iter().map(|(a, b)| (a.into(), b.into())).collect())
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect()
}

/// Canonical form of port ranges: sorted, merged per protocol.
pub fn merge_ports(mut v: Vec<PortRange>) -> Vec<PortRange> {
    v.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if last.proto == r.proto && r.first <= last.last.saturating_add(1) => {
                last.last = last.last.max(r.last)
            }
            _ => out.push(r),
        }
    }
    out
}

/// The inclusive address interval of an IPv4 CIDR; `None` for IPv6 (the
/// dataplane is IPv4 only, so an IPv6 block matches nothing here).
pub fn cidr_range(cidr: &str) -> Result<Option<(u32, u32)>, String> {
    match cidr.parse::<ipnetwork::IpNetwork>() {
        Ok(ipnetwork::IpNetwork::V4(n)) => Ok(Some((n.network().into(), n.broadcast().into()))),
        Ok(ipnetwork::IpNetwork::V6(_)) => Ok(None),
        Err(e) => Err(format!("invalid CIDR {cidr:?}: {e}")),
    }
}

/// Every port of one protocol.
pub fn all_ports(proto: Proto) -> PortRange {
    PortRange {
        proto,
        first: 0,
        last: u16::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_joins_overlap_and_adjacency() {
        assert_eq!(
            merge_u32(vec![(10, 20), (1, 3), (4, 5), (15, 25), (30, 30)]),
            vec![(1, 5), (10, 25), (30, 30)]
        );
        assert_eq!(merge_u32(vec![(0, u32::MAX), (5, 6)]), vec![(0, u32::MAX)]);
    }

    #[test]
    fn subtract_cuts_holes_and_ends() {
        assert_eq!(
            subtract_u32(&[(0, 100)], &[(10, 20)]),
            vec![(0, 9), (21, 100)]
        );
        assert_eq!(subtract_u32(&[(0, 100)], &[(0, 100)]), vec![]);
        assert_eq!(
            subtract_u32(&[(0, 100)], &[(0, 5), (95, 200)]),
            vec![(6, 94)]
        );
        assert_eq!(
            subtract_u32(&[(0, 10), (20, 30)], &[(5, 25)]),
            vec![(0, 4), (26, 30)]
        );
        assert_eq!(
            subtract_u32(&[(0, u32::MAX)], &[(u32::MAX, u32::MAX)]),
            vec![(0, u32::MAX - 1)]
        );
    }

    #[test]
    fn ports_merge_per_protocol_only() {
        let r = |proto, first, last| PortRange { proto, first, last };
        assert_eq!(
            merge_ports(vec![
                r(Proto::Udp, 80, 80),
                r(Proto::Tcp, 81, 90),
                r(Proto::Tcp, 80, 80),
                r(Proto::Udp, 82, 82)
            ]),
            vec![
                r(Proto::Tcp, 80, 90),
                r(Proto::Udp, 80, 80),
                r(Proto::Udp, 82, 82)
            ]
        );
    }

    #[test]
    fn cidr_ranges() {
        assert_eq!(
            cidr_range("10.0.0.0/8").unwrap(),
            Some((0x0a00_0000, 0x0aff_ffff))
        );
        assert_eq!(cidr_range("0.0.0.0/0").unwrap(), Some((0, u32::MAX)));
        assert_eq!(cidr_range("fd00::/8").unwrap(), None);
        assert!(cidr_range("10.0.0.0/33").is_err());
        assert!(cidr_range("nope").is_err());
    }
}
