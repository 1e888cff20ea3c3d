//! Who holds which slot, by attachment key: a hash map split into shards,
//! each behind a mutex of its own.
//!
//! The pod service looks a key up on every ADD (a repeated ADD gets the same
//! address back) and removes it on every DEL. Concurrent calls are for
//! different pods, so with the key's hash choosing among many shards they
//! almost never wait for each other, and an uncontended mutex costs less
//! than a lock-free map's epoch bookkeeping (measured, see the allocator
//! section of `bench/RESULTS.md`). hashbrown's `HashTable` lets one hash of
//! the key serve both the shard and the table. A std mutex, not an async one: nothing
//! waits while holding it, and the critical sections are a few hash-map
//! operations.

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use crossbeam_utils::CachePadded;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use super::{AttachmentKey, SlotId};

/// Shards: a power of two well above the calls a node serves at once.
const SHARDS: usize = 64;

/// foldhash: keys are container ids chosen by the runtime, hashed on every
/// ADD and DEL; SipHash costs more than the rest of the path.
type Hasher = foldhash::fast::RandomState;

/// A hash table that takes the hash from us, so each operation hashes its
/// key once for both the shard and the slot within it.
type Shard = HashTable<(AttachmentKey, SlotId)>;

/// The map.
pub struct Owners {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    hasher: Hasher,
}

impl Default for Owners {
    fn default() -> Self {
        Self::new()
    }
}

impl Owners {
    /// An empty map.
    pub fn new() -> Self {
        Owners {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashTable::new())))
                .collect(),
            hasher: Hasher::default(),
        }
    }

    /// The key's hash and its shard, locked. The shard comes from bits the
    /// table itself does not use (it takes the low bits for the bucket and
    /// the top seven for its tags), so keys stay spread within a shard.
    fn shard(&self, key: &AttachmentKey) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.hasher.hash_one(key);
        let i = (hash >> 32) as usize & (SHARDS - 1);
        // A panic while holding a shard cannot leave a half-made entry: the
        // table's own operations do not unwind midway.
        let guard = self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (hash, guard)
    }

    fn rehash(&self) -> impl Fn(&(AttachmentKey, SlotId)) -> u64 + '_ {
        |(k, _)| self.hasher.hash_one(k)
    }

    /// The slot `key` holds.
    pub fn get(&self, key: &AttachmentKey) -> Option<SlotId> {
        let (hash, shard) = self.shard(key);
        shard.find(hash, |(k, _)| k == key).map(|(_, id)| *id)
    }

    /// The slot `key` holds, or, if none, the one `take` gives (which `key`
    /// then holds). `take` runs under the shard's lock, so two calls for the
    /// same key never both take a slot. `None` if `take` found none.
    pub fn get_or_take(
        &self,
        key: &AttachmentKey,
        take: impl FnOnce() -> Option<SlotId>,
    ) -> Option<SlotId> {
        let (hash, mut shard) = self.shard(key);
        match shard.entry(hash, |(k, _)| k == key, self.rehash()) {
            Entry::Occupied(o) => Some(o.get().1),
            Entry::Vacant(v) => {
                let id = take()?;
                v.insert((key.clone(), id));
                Some(id)
            }
        }
    }

    /// Records that `key` holds `id` (replacing what it held).
    pub fn insert(&self, key: AttachmentKey, id: SlotId) {
        let (hash, mut shard) = self.shard(&key);
        match shard.entry(hash, |(k, _)| *k == key, self.rehash()) {
            Entry::Occupied(mut o) => o.get_mut().1 = id,
            Entry::Vacant(v) => {
                v.insert((key, id));
            }
        }
    }

    /// Forgets `key`; returns the slot it held.
    pub fn remove(&self, key: &AttachmentKey) -> Option<SlotId> {
        let (hash, mut shard) = self.shard(key);
        let found = shard.find_entry(hash, |(k, _)| k == key).ok()?;
        Some(found.remove().0 .1)
    }

    /// Forgets `key` if `holds` says yes of the slot it holds, in one step.
    pub fn remove_if(
        &self,
        key: &AttachmentKey,
        holds: impl FnOnce(SlotId) -> bool,
    ) -> Option<SlotId> {
        let (hash, mut shard) = self.shard(key);
        let found = shard.find_entry(hash, |(k, _)| k == key).ok()?;
        if !holds(found.get().1) {
            return None;
        }
        Some(found.remove().0 .1)
    }

    /// Every holder, in no order.
    pub fn all(&self) -> Vec<(AttachmentKey, SlotId)> {
        self.shards
            .iter()
            .flat_map(|s| {
                let shard = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                shard.iter().cloned().collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_slot_until_removed() {
        let o = Owners::new();
        let k = AttachmentKey::new("c1", "eth0");
        assert_eq!(o.get_or_take(&k, || Some(7)), Some(7));
        assert_eq!(
            o.get_or_take(&k, || panic!("must not take a second slot")),
            Some(7)
        );
        assert_eq!(o.get(&k), Some(7));
        assert_eq!(o.remove(&k), Some(7));
        assert_eq!(o.get(&k), None);
        assert_eq!(o.get_or_take(&k, || None), None);
        assert_eq!(o.get(&k), None, "nothing recorded when no slot was free");
    }

    #[test]
    fn every_holder_is_listed() {
        let o = Owners::new();
        for i in 0..200 {
            o.insert(AttachmentKey::new(format!("c{i}"), "eth0"), i);
        }
        let mut all = o.all();
        all.sort_by_key(|(_, id)| *id);
        assert_eq!(all.len(), 200);
        assert_eq!(all[199].0, AttachmentKey::new("c199", "eth0"));
    }
}
