//! The node's address allocator: which pool address belongs to which
//! attachment (containerId + ifname).
//!
//! Pure logic, no I/O. Free addresses are handed out in the order they were
//! freed (oldest first), so a released address rests as long as possible
//! before reuse and stale conntrack entries or endpoints do not reach a new
//! pod. Operations are O(1) on average. A single mutex guards the table: it
//! is held for a few hundred nanoseconds and never across an await.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// Who holds an address: one CNI attachment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttachmentKey {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl AttachmentKey {
    /// Builds a key.
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

/// An address and the ENI (by device index) it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub addr: Ipv4Addr,
    /// Device index of the ENI holding it.
    pub eni_index: u32,
}

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every address in the pool is held.
    #[error("all {total} addresses of the node's pool are in use")]
    Exhausted {
        /// Pool size.
        total: usize,
    },
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Addresses in the pool.
    pub total: usize,
    /// Addresses held by attachments.
    pub used: usize,
}

impl Usage {
    /// Free addresses.
    pub fn free(&self) -> usize {
        self.total - self.used
    }
}

#[derive(Default)]
struct Table {
    /// Every pool address and its ENI.
    eni_of: HashMap<Ipv4Addr, u32>,
    /// Free addresses, least recently released first.
    free: VecDeque<Ipv4Addr>,
    /// Holder → address.
    held: HashMap<AttachmentKey, Ipv4Addr>,
}

/// The allocator.
#[derive(Default)]
pub struct Allocator {
    table: Mutex<Table>,
}

impl Allocator {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("allocator mutex poisoned")
    }

    /// Adds addresses of ENI `eni_index` to the pool (new ones go to the back
    /// of the free queue). Addresses already in the pool are ignored.
    pub fn grow(&self, eni_index: u32, addrs: &[Ipv4Addr]) {
        let mut t = self.table();
        for &addr in addrs {
            if t.eni_of.insert(addr, eni_index).is_none() {
                t.free.push_back(addr);
            }
        }
    }

    /// Removes free addresses from the pool (returned to the cloud). Held
    /// addresses are never removed; returns the ones actually removed.
    pub fn shrink(&self, addrs: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
        let mut t = self.table();
        let mut removed = Vec::new();
        for addr in addrs {
            if let Some(pos) = t.free.iter().position(|a| a == addr) {
                t.free.remove(pos);
                t.eni_of.remove(addr);
                removed.push(*addr);
            }
        }
        removed
    }

    /// Gives `key` an address, or the one it already holds.
    pub fn allocate(&self, key: &AttachmentKey) -> Result<Lease, AllocError> {
        let mut t = self.table();
        if let Some(&addr) = t.held.get(key) {
            return Ok(Lease {
                addr,
                eni_index: t.eni_of[&addr],
            });
        }
        let Some(addr) = t.free.pop_front() else {
            return Err(AllocError::Exhausted {
                total: t.eni_of.len(),
            });
        };
        t.held.insert(key.clone(), addr);
        Ok(Lease {
            addr,
            eni_index: t.eni_of[&addr],
        })
    }

    /// Takes `key`'s address back; `None` if it held none.
    pub fn release(&self, key: &AttachmentKey) -> Option<Lease> {
        let mut t = self.table();
        let addr = t.held.remove(key)?;
        let eni_index = *t.eni_of.get(&addr)?;
        t.free.push_back(addr);
        Some(Lease { addr, eni_index })
    }

    /// The address `key` holds.
    pub fn lookup(&self, key: &AttachmentKey) -> Option<Lease> {
        let t = self.table();
        let addr = *t.held.get(key)?;
        Some(Lease {
            addr,
            eni_index: t.eni_of[&addr],
        })
    }

    /// Every holder, sorted by key.
    pub fn holders(&self) -> Vec<(AttachmentKey, Lease)> {
        let t = self.table();
        let mut out: Vec<_> = t
            .held
            .iter()
            .map(|(k, a)| {
                (
                    k.clone(),
                    Lease {
                        addr: *a,
                        eni_index: t.eni_of[a],
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Pool size and use.
    pub fn usage(&self) -> Usage {
        let t = self.table();
        Usage {
            total: t.eni_of.len(),
            used: t.held.len(),
        }
    }

    /// Free addresses per ENI device index.
    pub fn free_by_eni(&self) -> HashMap<u32, Vec<Ipv4Addr>> {
        let t = self.table();
        let mut out: HashMap<u32, Vec<Ipv4Addr>> = HashMap::new();
        for a in &t.free {
            out.entry(t.eni_of[a]).or_default().push(*a);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    #[test]
    fn same_key_same_address() {
        let a = Allocator::new();
        a.grow(0, &[ip(10), ip(11)]);
        let k = AttachmentKey::new("c1", "eth0");
        let first = a.allocate(&k).unwrap();
        assert_eq!(a.allocate(&k).unwrap(), first);
        assert_eq!(a.usage(), Usage { total: 2, used: 1 });
    }

    #[test]
    fn exhaustion_then_release() {
        let a = Allocator::new();
        a.grow(1, &[ip(10)]);
        let k1 = AttachmentKey::new("c1", "eth0");
        let k2 = AttachmentKey::new("c2", "eth0");
        let l1 = a.allocate(&k1).unwrap();
        assert_eq!(l1.eni_index, 1);
        assert_eq!(a.allocate(&k2), Err(AllocError::Exhausted { total: 1 }));
        assert_eq!(a.release(&k1), Some(l1));
        assert_eq!(a.release(&k1), None);
        assert_eq!(a.allocate(&k2).unwrap().addr, ip(10));
    }

    #[test]
    fn released_addresses_rest_longest() {
        let a = Allocator::new();
        a.grow(0, &[ip(10), ip(11), ip(12)]);
        let k = |n: &str| AttachmentKey::new(n, "eth0");
        assert_eq!(a.allocate(&k("a")).unwrap().addr, ip(10));
        a.release(&k("a"));
        // .10 was just released: .11 and .12 are handed out first.
        assert_eq!(a.allocate(&k("b")).unwrap().addr, ip(11));
        assert_eq!(a.allocate(&k("c")).unwrap().addr, ip(12));
        assert_eq!(a.allocate(&k("d")).unwrap().addr, ip(10));
    }

    #[test]
    fn shrink_never_takes_held_addresses() {
        let a = Allocator::new();
        a.grow(0, &[ip(10), ip(11)]);
        let held = a.allocate(&AttachmentKey::new("c", "eth0")).unwrap().addr;
        let removed = a.shrink(&[ip(10), ip(11)]);
        assert_eq!(removed.len(), 1);
        assert!(!removed.contains(&held));
        assert_eq!(a.usage(), Usage { total: 1, used: 1 });
    }

    #[test]
    fn grow_ignores_duplicates() {
        let a = Allocator::new();
        a.grow(0, &[ip(10)]);
        a.grow(0, &[ip(10), ip(11)]);
        assert_eq!(a.usage().total, 2);
        assert_eq!(a.free_by_eni()[&0].len(), 2);
    }
}
