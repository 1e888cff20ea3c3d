//! Which addresses of a subnet are in use: a bitmap with a lowest-free hint.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// Addresses AWS keeps at the start of every subnet: network, VPC router,
/// DNS, and one "reserved for future use".
const RESERVED_AT_START: u32 = 4;

/// The used addresses of one subnet.
///
/// A bitmap rather than a set of used addresses: a /16 costs 8 KiB, and
/// finding the lowest free address (which keeps the demo easy to read) is a
/// word scan from `hint` instead of a walk over every address.
#[derive(Debug)]
pub(super) struct SubnetAddresses {
    cidr: Ipv4Network,
    /// Bit `i` set: offset `i` from the network address is in use.
    words: Vec<u64>,
    size: u32,
    free: u32,
    /// Every offset below `hint` is in use.
    hint: u32,
    /// No free aligned block starts below `block_hint`.
    block_hint: u32,
}

impl SubnetAddresses {
    /// All of `cidr` free except what AWS reserves: the first four addresses
    /// and the last (broadcast). `cidr` must be normalised and hold more than
    /// the reserved five (the caller checks /16../28).
    pub(super) fn new(cidr: Ipv4Network) -> Self {
        let size = cidr.size();
        let mut this = SubnetAddresses {
            cidr,
            words: vec![0; size.div_ceil(64) as usize],
            size,
            free: size,
            hint: 0,
            block_hint: 0,
        };
        for offset in (0..RESERVED_AT_START).chain([size - 1]) {
            this.mark(offset);
        }
        this
    }

    /// Addresses still free.
    pub(super) fn free(&self) -> u32 {
        self.free
    }

    /// Whether `ip` is in use (reserved addresses count as used; addresses
    /// outside the subnet are not).
    pub(super) fn is_used(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some_and(|o| self.bit(o))
    }

    /// Takes the `count` lowest free addresses, or none if fewer are free.
    pub(super) fn take_lowest(&mut self, count: u32) -> Option<Vec<Ipv4Addr>> {
        if count > self.free {
            return None;
        }
        let mut taken = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let offset = self
                .lowest_free()
                .expect("free counter says an address is left");
            self.mark(offset);
            taken.push(self.addr(offset));
        }
        Some(taken)
    }

    /// Returns `ip` to the free pool. Reserved addresses, addresses outside
    /// the subnet and addresses not in use are left alone; returns whether
    /// `ip` was released.
    pub(super) fn release(&mut self, ip: Ipv4Addr) -> bool {
        let Some(offset) = self.offset(ip) else {
            return false;
        };
        if offset < RESERVED_AT_START || offset == self.size - 1 || !self.bit(offset) {
            return false;
        }
        self.words[(offset / 64) as usize] &= !(1u64 << (offset % 64));
        self.free += 1;
        self.hint = self.hint.min(offset);
        self.block_hint = self.block_hint.min(offset);
        true
    }

    /// Takes the lowest free, aligned block of `2^(32 - prefix)` addresses
    /// (a /28 prefix for delegation), or `None` if every aligned block has an
    /// address in use (a fragmented subnet: EC2's `InsufficientCidrBlocks`).
    pub(super) fn take_block(&mut self, prefix: u8) -> Option<Ipv4Network> {
        let len = 1u32 << (32 - prefix);
        let mut start = (self.hint.max(self.block_hint) / len) * len;
        while start + len <= self.size {
            if self.range_free(start, len) {
                self.block_hint = start + len;
                for o in start..start + len {
                    self.mark(o);
                }
                let net = Ipv4Network::new(self.addr(start), prefix)
                    .expect("prefix checked by the caller");
                return Some(net);
            }
            start += len;
        }
        self.block_hint = self.size;
        None
    }

    /// Whether offsets `start..start+len` are all free; word-at-a-time for
    /// blocks that fit in one word (a /28 is 16 bits), so a scan over a
    /// crowded /16 stays cheap.
    fn range_free(&self, start: u32, len: u32) -> bool {
        if len <= 64 && start.is_multiple_of(len) {
            let word = self.words[(start / 64) as usize];
            let mask = if len == 64 {
                u64::MAX
            } else {
                ((1u64 << len) - 1) << (start % 64)
            };
            return word & mask == 0;
        }
        (start..start + len).all(|o| !self.bit(o))
    }

    /// Returns every address of `block` to the free pool.
    pub(super) fn release_block(&mut self, block: Ipv4Network) {
        for ip in block.iter() {
            self.release(ip);
        }
    }

    /// Marks `ip` in use (someone else's), if it is free and in the subnet.
    pub(super) fn occupy(&mut self, ip: Ipv4Addr) -> bool {
        match self.offset(ip) {
            Some(o) if !self.bit(o) => {
                self.mark(o);
                true
            }
            _ => false,
        }
    }

    fn lowest_free(&mut self) -> Option<u32> {
        let first_word = (self.hint / 64) as usize;
        for (i, word) in self.words.iter().enumerate().skip(first_word) {
            if *word != u64::MAX {
                let offset = i as u32 * 64 + word.trailing_ones();
                if offset < self.size {
                    self.hint = offset;
                    return Some(offset);
                }
            }
        }
        None
    }

    /// Marks `ip` in use (resuming saved state); addresses outside the
    /// subnet or already in use are left alone.
    pub(super) fn mark_used(&mut self, ip: Ipv4Addr) {
        if let Some(offset) = self.offset(ip).filter(|&o| !self.bit(o)) {
            self.mark(offset);
        }
    }

    fn mark(&mut self, offset: u32) {
        debug_assert!(!self.bit(offset), "address offset {offset} taken twice");
        self.words[(offset / 64) as usize] |= 1u64 << (offset % 64);
        self.free -= 1;
    }

    fn bit(&self, offset: u32) -> bool {
        self.words[(offset / 64) as usize] & (1u64 << (offset % 64)) != 0
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        self.cidr
            .contains(ip)
            .then(|| u32::from(ip) - u32::from(self.cidr.network()))
    }

    fn addr(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn reserves_first_four_and_broadcast() {
        let mut a = SubnetAddresses::new(net("10.0.0.0/28"));
        assert_eq!(a.free(), 11);
        for r in ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.15"] {
            assert!(a.is_used(ip(r)), "{r}");
            assert!(!a.release(ip(r)), "{r}");
        }
        let all = a.take_lowest(11).unwrap();
        assert_eq!(all.first(), Some(&ip("10.0.0.4")));
        assert_eq!(all.last(), Some(&ip("10.0.0.14")));
        assert_eq!(a.free(), 0);
        assert_eq!(a.take_lowest(1), None);
    }

    #[test]
    fn all_or_nothing() {
        let mut a = SubnetAddresses::new(net("10.0.0.0/28"));
        assert_eq!(a.take_lowest(12), None);
        assert_eq!(a.free(), 11);
        assert_eq!(a.take_lowest(0), Some(vec![]));
    }

    #[test]
    fn release_makes_the_lowest_free_again() {
        let mut a = SubnetAddresses::new(net("10.1.0.0/24"));
        let first = a.take_lowest(100).unwrap();
        assert!(a.release(first[10]));
        assert!(!a.release(first[10]), "double release");
        assert!(!a.release(ip("10.2.0.9")), "outside the subnet");
        assert_eq!(a.take_lowest(2).unwrap(), vec![first[10], ip("10.1.0.104")]);
    }

    #[test]
    fn blocks_are_aligned_and_avoid_used_addresses() {
        let mut a = SubnetAddresses::new(net("10.0.0.0/26"));
        // The first /28 holds AWS's reserved addresses, the last the broadcast.
        assert_eq!(a.take_block(28), Some(net("10.0.0.16/28")));
        assert!(a.occupy(ip("10.0.0.33")));
        assert_eq!(a.take_block(28), None, "10.0.0.32/28 has a hole");
        assert_eq!(a.free(), 64 - 5 - 16 - 1);
        a.release_block(net("10.0.0.16/28"));
        assert_eq!(a.take_lowest(1), Some(vec![ip("10.0.0.4")]));
        assert_eq!(a.take_block(28), Some(net("10.0.0.16/28")));
    }

    #[test]
    fn crosses_word_boundaries_and_stops_before_broadcast() {
        let mut a = SubnetAddresses::new(net("10.0.0.0/16"));
        assert_eq!(a.free(), 65536 - 5);
        let all = a.take_lowest(65536 - 5).unwrap();
        assert_eq!(all[59], ip("10.0.0.63"));
        assert_eq!(all[60], ip("10.0.0.64"));
        assert_eq!(all.last(), Some(&ip("10.0.255.254")));
        assert!(a.is_used(ip("10.0.255.255")));
        assert_eq!(a.take_lowest(1), None);
    }
}
