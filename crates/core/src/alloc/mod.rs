//! The node's address allocator: which pool address belongs to which
//! attachment (containerId + ifname).
//!
//! Pure logic, no I/O, and no lock on the hot path:
//! - Free addresses wait in FIFO rings ([`ring::Ring`], lock-free), ordered
//!   by the time they were released. Each thread has a home ring (rotating
//!   assignment), so concurrent callers rarely touch the same cache lines.
//! - A slot's state (free, held, retired) is one atomic byte; every
//!   transition is a compare-and-swap, so no address can be held twice even
//!   if a ring misbehaved.
//! - **Cooldown**: an address is taken only once it has rested for the
//!   cooldown (aws-node's `IP_COOLDOWN_PERIOD`, 30 s by default), so stale
//!   conntrack entries or endpoints never reach a new pod. But cooldown never
//!   starves an ADD: when only resting addresses are left, the one released
//!   longest ago is taken and counted ([`Allocator::cooldown_bypassed`]).
//! - Holders are found by key in a map split into shards, each behind its
//!   own mutex ([`owners`]): release by containerId is O(1), a repeated ADD
//!   gets the same address back, and two ADDs of different pods almost never
//!   meet on one lock. A lock-free map (papaya) was measured slower here, at
//!   one thread and at two: see `bench/RESULTS.md`, allocator section.
//! - Reading the clock costs as much as the rest of an alloc+free pair on
//!   the machines we measure on, so each thread remembers the last time it
//!   read: an address that had rested long enough by then has rested long
//!   enough now, and only a doubtful one costs a fresh read.
//! - Growing and shrinking the pool (a new ENI, addresses returned to the
//!   cloud) are rare; they serialise on a mutex of their own. The slot array
//!   is sized once for the node's limits, so allocation never takes that
//!   mutex, never follows a pointer that can change, and never sees a torn
//!   slot: a slot's address is written before its state is published.

pub mod owners;
pub mod ring;

#[doc(hidden)]
pub mod sync {
    //! The atomics the ring is written against (loom's in the model test).
    pub use std::hint::spin_loop;
    pub use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    pub use std::thread::yield_now;
    /// Busy-waits before yielding the CPU to a preempted peer.
    pub const SPIN_LIMIT: u32 = 64;
}

use std::cell::Cell;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use ring::{Entry, Pop, Ring};

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

/// Why the pool could not grow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrowError {
    /// The allocator was sized for fewer addresses.
    #[error("the allocator holds at most {capacity} addresses")]
    Capacity {
        /// Its capacity.
        capacity: usize,
    },
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// The address is already in the pool (reserve before filling it).
    #[error("{addr} is already in the pool")]
    InPool {
        /// The address.
        addr: Ipv4Addr,
    },
    /// Another attachment reserved it.
    #[error("{addr} is already reserved for container {}", other.container_id)]
    Taken {
        /// The address.
        addr: Ipv4Addr,
        /// Who reserved it.
        other: AttachmentKey,
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

/// A slot id: an index into the slot table.
pub type SlotId = u32;

const FREE: u8 = 0;
const HELD: u8 = 1;
/// Returned to the cloud (or never used: the tail of a chunk). Terminal.
const RETIRED: u8 = 2;

/// A slot's address and ENI are written while it is RETIRED (never while a
/// ring entry or a holder can see it) and published by the Release store of
/// FREE; readers load them after an Acquire of the state.
struct Slot {
    addr: AtomicU32,
    eni_index: AtomicU32,
    state: AtomicU8,
    /// When it was last released (the allocator's clock; 0 = never used),
    /// for counting resting addresses in status and metrics only.
    freed_ms: AtomicU64,
}

impl Slot {
    fn unused() -> Self {
        Slot {
            addr: AtomicU32::new(0),
            eni_index: AtomicU32::new(0),
            state: AtomicU8::new(RETIRED),
            freed_ms: AtomicU64::new(0),
        }
    }

    fn lease(&self) -> Lease {
        Lease {
            addr: Ipv4Addr::from(self.addr.load(Ordering::Relaxed)),
            eni_index: self.eni_index.load(Ordering::Relaxed),
        }
    }
}

/// The allocator.
pub struct Allocator {
    /// One ring per shard (threads release into their home shard), then
    /// one more for addresses that were never used ([`Self::fresh`]).
    rings: Box<[Ring]>,
    shards: usize,
    /// Every slot id the allocator can ever use: live addresses plus retired
    /// ones whose ring entry has not been dropped yet. A cache line each:
    /// two threads working on neighbouring slots would otherwise bounce one
    /// line between their cores on every alloc and free.
    slots: Box<[CachePadded<Slot>]>,
    /// Ids of retired slots whose ring entry is gone: reusable by `grow`.
    recycled: Ring,
    /// Who holds which slot.
    owners: owners::Owners,
    /// Serialises grow/shrink, and holds what only they need.
    admin: Mutex<Admin>,
    capacity: usize,
    /// Entries of retired slots still waiting in a ring (dropped when they
    /// reach a head); they count against ring space until then.
    lingering: AtomicUsize,
    cooldown_ms: u64,
    cooldown_bypassed: AtomicU64,
}

#[derive(Default)]
struct Admin {
    /// Address → slot of every address in the pool.
    index: HashMap<Ipv4Addr, SlotId>,
    /// Slots not in use, ready to take a new address (lowest id last).
    spare: Vec<SlotId>,
    /// Addresses that attachments held before a restart but that the pool
    /// does not have (yet): when one joins the pool it is born held.
    reserved: HashMap<Ipv4Addr, AttachmentKey>,
}

static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's home ring (`usize::MAX` until first used), and the
    /// monotonic clock in ms as this thread last read it.
    static LOCAL: (Cell<usize>, Cell<u64>) = const { (Cell::new(usize::MAX), Cell::new(0)) };
}

/// `CLOCK_MONOTONIC_COARSE` in ms (a few ms of resolution, a fraction of the
/// cost of a precise read: plenty for a cooldown measured in seconds),
/// remembered as this thread's last reading.
fn clock_ms() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .expect("CLOCK_MONOTONIC_COARSE is always available on Linux");
    let ms = ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000;
    LOCAL.with(|l| l.1.set(ms));
    ms
}

/// The clock as this thread last read it: never ahead of the truth.
fn clock_seen_ms() -> u64 {
    LOCAL.with(|l| l.1.get())
}

impl Allocator {
    /// An empty pool for at most `capacity` addresses, with `cooldown`.
    pub fn new(capacity: usize, cooldown: Duration) -> Self {
        let capacity = capacity.max(1);
        // One ring per hardware thread (at least 2, at most 16): enough to
        // spread contention, few enough that the starved path (which looks
        // at every ring's head) stays cheap. A power of two, so a thread's
        // home is a mask, not a division, on every alloc and free.
        let shards = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 16)
            .next_power_of_two();
        // Each ring must be able to hold every entry (releases go to the
        // releasing thread's ring, whichever that is): the live slots plus
        // retired ones not yet dropped, hence twice the capacity.
        // +1: the ring of never-used addresses. Keeping them apart means a
        // fresh address is never stuck behind one that is still cooling.
        let rings: Box<[Ring]> = (0..shards + 1)
            .map(|_| Ring::with_capacity(capacity * 2))
            .collect();
        let ids = rings[0].capacity();
        Self {
            slots: (0..ids).map(|_| CachePadded::new(Slot::unused())).collect(),
            recycled: Ring::with_capacity(ids),
            rings,
            shards,
            owners: owners::Owners::new(),
            admin: Mutex::new(Admin {
                index: HashMap::new(),
                spare: (0..ids as SlotId).rev().collect(),
                reserved: HashMap::new(),
            }),
            capacity,
            lingering: AtomicUsize::new(0),
            cooldown_ms: cooldown.as_millis() as u64,
            cooldown_bypassed: AtomicU64::new(0),
        }
    }

    /// The allocator's clock: monotonic ms, offset by the cooldown so that
    /// fresh slots (released "at 0") count as rested.
    fn now_ms(&self) -> u64 {
        clock_ms() + self.cooldown_ms
    }

    /// Whether `e` has rested for the cooldown: decided on this thread's
    /// last clock reading when that is enough, else on a fresh one.
    fn rested(&self, e: &Entry) -> bool {
        let enough =
            |now: u64| (now + self.cooldown_ms).saturating_sub(e.released_ms) >= self.cooldown_ms;
        enough(clock_seen_ms()) || enough(clock_ms())
    }

    fn home(&self) -> usize {
        let home = LOCAL.with(|l| {
            let h = l.0.get();
            if h != usize::MAX {
                return h;
            }
            let h = NEXT_HOME.fetch_add(1, Ordering::Relaxed);
            l.0.set(h);
            h
        });
        home & (self.shards - 1)
    }

    /// Adds addresses of ENI `eni_index` to the pool. Addresses already in
    /// the pool are ignored. Fails, adding nothing, beyond the capacity the
    /// allocator was made for.
    pub fn grow(&self, eni_index: u32, addrs: &[Ipv4Addr]) -> Result<(), GrowError> {
        let mut admin = self.admin.lock().expect("allocator admin mutex poisoned");
        let mut seen = std::collections::HashSet::new();
        let fresh: Vec<Ipv4Addr> = addrs
            .iter()
            .copied()
            .filter(|a| !admin.index.contains_key(a) && seen.insert(*a))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let live = admin.index.len();
        let lingering = self.lingering.load(Ordering::Acquire);
        if live + fresh.len() > self.capacity
            || live + lingering + fresh.len() > self.rings[0].capacity()
        {
            return Err(GrowError::Capacity {
                capacity: self.capacity,
            });
        }
        while let Some(e) = self.recycled.pop() {
            admin.spare.push(e.slot);
        }
        // Reserved for a key that holds another address since (its ADD was
        // retried before this one joined): used before the restart, so it
        // rests like any released address instead of being held twice.
        let mut stale = Vec::new();
        for addr in fresh {
            let id = admin
                .spare
                .pop()
                .expect("ids = ring capacity ≥ live + lingering");
            let slot = &self.slots[id as usize];
            slot.addr.store(u32::from(addr), Ordering::Relaxed);
            slot.eni_index.store(eni_index, Ordering::Relaxed);
            slot.freed_ms.store(0, Ordering::Relaxed);
            admin.index.insert(addr, id);
            if let Some(key) = admin.reserved.remove(&addr) {
                // Held by an attachment from before a restart: never free,
                // so it gets no ring entry.
                slot.state.store(HELD, Ordering::Release);
                if self.owners.get(&key).is_some() {
                    stale.push(id);
                } else {
                    self.owners.insert(key, id);
                }
                continue;
            }
            slot.state.store(FREE, Ordering::Release);
            // Fresh addresses are cooled: they were never used.
            self.push(
                self.fresh(),
                Entry {
                    slot: id,
                    released_ms: 0,
                },
            );
        }
        drop(admin);
        for id in stale {
            self.free_slot(id);
        }
        Ok(())
    }

    /// The index of the ring of never-used addresses.
    fn fresh(&self) -> usize {
        self.shards
    }

    /// Pushes into ring `start`, or the next one with room.
    fn push(&self, start: usize, entry: Entry) {
        let mut entry = entry;
        for ring in self.rings[start..].iter().chain(&self.rings[..start]) {
            match ring.push(entry) {
                Ok(()) => return,
                Err(back) => entry = back,
            }
        }
        // Every ring holds at least `capacity` entries and there are never
        // more free slots than that, so this is a broken invariant.
        panic!("allocator rings full: more free slots than capacity");
    }

    /// Removes free addresses from the pool (to return them to the cloud).
    /// Held addresses are never removed; returns the ones actually removed.
    pub fn shrink(&self, addrs: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
        let mut admin = self.admin.lock().expect("allocator admin mutex poisoned");
        let mut removed = Vec::new();
        for addr in addrs {
            let Some(&id) = admin.index.get(addr) else {
                continue;
            };
            // A retired slot's ring entry is dropped when it reaches a head.
            if self.slots[id as usize]
                .state
                .compare_exchange(FREE, RETIRED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                admin.index.remove(addr);
                self.lingering.fetch_add(1, Ordering::AcqRel);
                removed.push(*addr);
            }
        }
        removed
    }

    /// Takes a free slot: one that has rested for the cooldown if any, else
    /// the one released longest ago. No lock and no syscall; the only wait
    /// is for a releasing thread that was preempted halfway through its push
    /// (the ring's head cell is claimed but not yet written).
    pub fn alloc_slot(&self) -> Option<SlotId> {
        let cooled = |e: &Entry| self.rested(e);
        let home = self.home();
        // Our own shard first (its lines are warm in this core's cache),
        // then never-used addresses, then the other shards.
        let order = || {
            std::iter::once(home)
                .chain(std::iter::once(self.fresh()))
                .chain((1..self.shards).map(move |k| (home + k) & (self.shards - 1)))
        };
        // Set once a scan found nothing: the pushes seen before the next scan.
        let mut pushes_before: Option<u64> = None;
        for attempt in 0u32.. {
            let mut busy = false;
            for i in order() {
                let ring = &self.rings[i];
                loop {
                    match ring.pop_if(cooled) {
                        Pop::Taken(e) if self.claim(e.slot) => return Some(e.slot),
                        Pop::Taken(_) => continue,
                        Pop::Busy => busy = true,
                        Pop::Refused(_) | Pop::Empty => {}
                    }
                    break;
                }
            }
            // Starved: every free address is still cooling. Take the one that
            // has rested longest (the oldest ring head) rather than fail.
            let mut oldest: Option<(usize, Entry)> = None;
            for (i, ring) in self.rings.iter().enumerate() {
                match ring.peek() {
                    Pop::Refused(e)
                        if oldest.is_none_or(|(_, o)| e.released_ms < o.released_ms) =>
                    {
                        oldest = Some((i, e))
                    }
                    Pop::Busy => busy = true,
                    _ => {}
                }
            }
            if let Some((i, target)) = oldest {
                if let Pop::Taken(e) = self.rings[i].pop_if(|e| *e == target) {
                    if self.claim(e.slot) {
                        if !cooled(&e) {
                            self.cooldown_bypassed.fetch_add(1, Ordering::Relaxed);
                        }
                        return Some(e.slot);
                    }
                }
                continue;
            }
            if !busy {
                // Each ring was empty when we looked at it, but not
                // necessarily all at once: entries move between rings (taken
                // from one, released to another) while we scan. Only if no
                // push started since before a whole scan were they all empty
                // together, and the pool really is exhausted.
                let pushes = self.pushes();
                if pushes_before == Some(pushes) {
                    return None;
                }
                pushes_before = Some(pushes);
                continue;
            }
            pushes_before = None;
            if attempt < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        unreachable!("the loop above returns")
    }

    fn pushes(&self) -> u64 {
        self.rings.iter().map(Ring::pushes).sum()
    }

    /// Gives a held slot back; it rests for the cooldown before reuse.
    /// Returns false (and changes nothing) if the slot was not held.
    pub fn free_slot(&self, id: SlotId) -> bool {
        let Some(slot) = self.slots.get(id as usize) else {
            return false;
        };
        if slot.state.load(Ordering::Acquire) != HELD {
            return false;
        }
        let now = self.now_ms();
        // Before the state flips: a scan that sees FREE sees this time (or a
        // later one), so it never counts a just-released address as rested.
        // Only the holder frees a slot, so a plain store will do (an atomic
        // swap costs as much as the rest of this function).
        let before = slot.freed_ms.load(Ordering::Relaxed);
        slot.freed_ms.store(now, Ordering::Relaxed);
        if slot
            .state
            .compare_exchange(HELD, FREE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            slot.freed_ms.store(before, Ordering::Relaxed);
            return false;
        }
        self.push(
            self.home(),
            Entry {
                slot: id,
                released_ms: now,
            },
        );
        true
    }

    /// The address and ENI of a slot.
    pub fn slot_lease(&self, id: SlotId) -> Lease {
        self.slots[id as usize].lease()
    }

    /// Gives `key` an address, or the one it already holds.
    pub fn allocate(&self, key: &AttachmentKey) -> Result<Lease, AllocError> {
        match self.owners.get_or_take(key, || self.alloc_slot()) {
            Some(id) => Ok(self.slot_lease(id)),
            None => Err(AllocError::Exhausted {
                total: self.usage().total,
            }),
        }
    }

    /// Records that `key` holds `addr` (restoring allocations after a
    /// restart), before the address is in the pool: when `grow` adds it, it
    /// is held by `key` from the start and never handed to anyone else.
    /// Call it before the pool is filled. Fails if the address is already in
    /// the pool or reserved for another key.
    pub fn reserve(&self, key: &AttachmentKey, addr: Ipv4Addr) -> Result<(), ReserveError> {
        let mut admin = self.admin.lock().expect("allocator admin mutex poisoned");
        if admin.index.contains_key(&addr) {
            return Err(ReserveError::InPool { addr });
        }
        match admin.reserved.get(&addr) {
            Some(other) if other != key => Err(ReserveError::Taken {
                addr,
                other: other.clone(),
            }),
            _ => {
                admin.reserved.insert(addr, key.clone());
                Ok(())
            }
        }
    }

    /// Takes `key`'s address back; `None` if it held none.
    pub fn release(&self, key: &AttachmentKey) -> Option<Lease> {
        let Some(id) = self.owners.remove(key) else {
            // A reservation whose address never joined the pool.
            let mut admin = self.admin.lock().expect("allocator admin mutex poisoned");
            let addr = admin
                .reserved
                .iter()
                .find(|(_, k)| *k == key)
                .map(|(a, _)| *a)?;
            admin.reserved.remove(&addr);
            return None;
        };
        let lease = self.slot_lease(id);
        self.free_slot(id);
        Some(lease)
    }

    /// Takes `key`'s address back only if it is still `addr` (held, or
    /// reserved and not yet in the pool): a release decided earlier must
    /// not free what the key was given since. Whether it did.
    pub fn release_held(&self, key: &AttachmentKey, addr: Ipv4Addr) -> bool {
        {
            let mut admin = self.admin.lock().expect("allocator admin mutex poisoned");
            if admin.reserved.get(&addr) == Some(key) {
                admin.reserved.remove(&addr);
                return true;
            }
        }
        match self
            .owners
            .remove_if(key, |id| self.slot_lease(id).addr == addr)
        {
            Some(id) => self.free_slot(id),
            None => false,
        }
    }

    /// The address `key` holds.
    pub fn lookup(&self, key: &AttachmentKey) -> Option<Lease> {
        self.owners.get(key).map(|id| self.slot_lease(id))
    }

    /// Every holder, sorted by key.
    pub fn holders(&self) -> Vec<(AttachmentKey, Lease)> {
        let mut out: Vec<_> = self
            .owners
            .all()
            .into_iter()
            .map(|(k, id)| (k, self.slot_lease(id)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Pool size and use (a scan: for status, not the hot path).
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for s in self.slots.iter() {
            match s.state.load(Ordering::Acquire) {
                FREE => u.total += 1,
                HELD => {
                    u.total += 1;
                    u.used += 1
                }
                _ => {}
            }
        }
        u
    }

    /// Free addresses per ENI device index.
    pub fn free_by_eni(&self) -> HashMap<u32, Vec<Ipv4Addr>> {
        let mut out: HashMap<u32, Vec<Ipv4Addr>> = HashMap::new();
        for s in self.slots.iter() {
            if s.state.load(Ordering::Acquire) == FREE {
                let l = s.lease();
                out.entry(l.eni_index).or_default().push(l.addr);
            }
        }
        out
    }

    /// Free addresses still resting after their release (a scan: for
    /// status and metrics, not the hot path).
    pub fn cooling(&self) -> usize {
        let now = self.now_ms();
        self.slots
            .iter()
            .filter(|s| {
                s.state.load(Ordering::Acquire) == FREE
                    && now.saturating_sub(s.freed_ms.load(Ordering::Relaxed)) < self.cooldown_ms
            })
            .count()
    }

    /// How often cooldown was cut short because only resting addresses were left.
    pub fn cooldown_bypassed(&self) -> u64 {
        self.cooldown_bypassed.load(Ordering::Relaxed)
    }

    /// FREE → HELD. Fails for a slot retired while its entry waited in a
    /// ring; that entry is dropped here.
    fn claim(&self, id: SlotId) -> bool {
        let ok = self.slots[id as usize]
            .state
            .compare_exchange(FREE, HELD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !ok {
            // Its last entry is gone: the id can take a new address.
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            let _ = self.recycled.push(Entry {
                slot: id,
                released_ms: 0,
            });
        }
        ok
    }

    /// The configured cooldown.
    pub fn cooldown(&self) -> Duration {
        Duration::from_millis(self.cooldown_ms)
    }
}

#[cfg(test)]
mod tests;
