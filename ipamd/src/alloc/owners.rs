//! Who holds which slot, by attachment key: a hash map split into shards,
//! each behind a mutex of its own.
//!
//! The pod service looks a key up on every ADD (a repeated ADD gets the same
//! address back) and removes it on every DEL. Concurrent calls are for
//! different pods, so with the key's hash choosing among many shards they
//! almost never wait for each other, and an uncontended mutex costs less
//! than a lock-free map's epoch bookkeeping (measured, see the allocator
//! section of `bench/RESULTS.md`). A std mutex, not an async one: nothing
//! waits while holding it, and the critical sections are a few hash-map
//! operations.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use super::{AttachmentKey, SlotId};

/// Shards: a power of two well above the calls a node serves at once.
const SHARDS: usize = 64;

/// foldhash: keys are container ids chosen by the runtime, hashed on every
/// ADD and DEL; SipHash costs more than the rest of the path.
type Hasher = foldhash::fast::RandomState;

type Shard = HashMap<AttachmentKey, SlotId, Hasher>;

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
        let hasher = Hasher::default();
        Owners {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::with_hasher(hasher.clone()))))
                .collect(),
            hasher,
        }
    }

    fn shard(&self, key: &AttachmentKey) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize & (SHARDS - 1);
        // A panic while holding a shard cannot leave a half-made entry: the
        // map's own operations do not unwind midway.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The slot `key` holds.
    pub fn get(&self, key: &AttachmentKey) -> Option<SlotId> {
        self.shard(key).get(key).copied()
    }

    /// The slot `key` holds, or, if none, the one `take` gives (which `key`
    /// then holds; the flag says it is new). `take` runs under the shard's
    /// lock, so two calls for the same key never both take a slot. `None` if
    /// `take` found none.
    pub fn get_or_take(
        &self,
        key: &AttachmentKey,
        take: impl FnOnce() -> Option<SlotId>,
    ) -> Option<(SlotId, bool)> {
        let mut shard = self.shard(key);
        if let Some(&id) = shard.get(key) {
            return Some((id, false));
        }
        let id = take()?;
        shard.insert(key.clone(), id);
        Some((id, true))
    }

    /// Records that `key` holds `id` (replacing what it held).
    pub fn insert(&self, key: AttachmentKey, id: SlotId) {
        match self.shard(&key).entry(key) {
            Entry::Occupied(mut o) => {
                o.insert(id);
            }
            Entry::Vacant(v) => {
                v.insert(id);
            }
        }
    }

    /// Forgets `key`; returns the slot it held.
    pub fn remove(&self, key: &AttachmentKey) -> Option<SlotId> {
        self.shard(key).remove(key)
    }

    /// Every holder, in no order.
    pub fn all(&self) -> Vec<(AttachmentKey, SlotId)> {
        self.shards
            .iter()
            .flat_map(|s| {
                let shard = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                shard
                    .iter()
                    .map(|(k, &v)| (k.clone(), v))
                    .collect::<Vec<_>>()
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
        assert_eq!(o.get_or_take(&k, || Some(7)), Some((7, true)));
        assert_eq!(
            o.get_or_take(&k, || panic!("must not take a second slot")),
            Some((7, false))
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
