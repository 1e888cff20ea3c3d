//! A bounded lock-free multi-producer multi-consumer FIFO of free slots.
//!
//! This is Dmitry Vyukov's bounded MPMC queue: every cell carries a sequence
//! number that says whether it is ready to be written (`seq == pos`) or read
//! (`seq == pos + 1`); producers and consumers claim positions with one
//! compare-and-swap on `tail` / `head`. Values are plain atomics, so no
//! `unsafe` is needed.
//!
//! One addition: [`Ring::pop_if`] looks at the head entry and takes it only
//! if a predicate holds. The allocator uses it to take an address only once
//! its cooldown has passed. Reading the entry before the CAS is sound: the
//! cell at `pos` cannot be rewritten until `head` has moved past `pos`, and
//! then our CAS fails and the read is discarded.
//!
//! The file is written against `super::sync` so the loom model test
//! (`crates/core/tests/loom_ring.rs`) can compile it with loom's atomics.

use super::sync::{AtomicU32, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

/// One free slot and when it was released (ms on the allocator's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Slot id.
    pub slot: u32,
    /// Release time in milliseconds.
    pub released_ms: u64,
}

/// What [`Ring::pop_if`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop {
    /// The head entry, now removed.
    Taken(Entry),
    /// The head entry, left in place because the predicate refused it.
    Refused(Entry),
    /// Nothing to take.
    Empty,
    /// The head cell is claimed by a producer that has not finished writing
    /// it (it was preempted between its two steps). Entries may wait behind
    /// it; the caller should look elsewhere or retry shortly.
    Busy,
}

struct Cell {
    seq: AtomicU64,
    slot: AtomicU32,
    released_ms: AtomicU64,
}

/// The queue.
pub struct Ring {
    cells: Box<[Cell]>,
    mask: u64,
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
}

impl Ring {
    /// A ring holding at least `capacity` entries (rounded up to a power of two).
    pub fn with_capacity(capacity: usize) -> Self {
        let cap = capacity.max(2).next_power_of_two();
        let cells = (0..cap as u64)
            .map(|i| Cell {
                seq: AtomicU64::new(i),
                slot: AtomicU32::new(0),
                released_ms: AtomicU64::new(0),
            })
            .collect();
        Self {
            cells,
            mask: cap as u64 - 1,
            head: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// How many pushes have started so far (only ever grows).
    pub fn pushes(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// How many entries fit.
    pub fn capacity(&self) -> usize {
        self.cells.len()
    }

    fn cell(&self, pos: u64) -> &Cell {
        &self.cells[(pos & self.mask) as usize]
    }

    /// Appends `entry`; gives it back if the ring is full.
    pub fn push(&self, entry: Entry) -> Result<(), Entry> {
        let mut pos = self.tail.load(Ordering::Relaxed);
        let mut spins = 0u32;
        loop {
            let cell = self.cell(pos);
            let seq = cell.seq.load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos) as i64;
            if dif == 0 {
                match self.tail.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        cell.slot.store(entry.slot, Ordering::Relaxed);
                        cell.released_ms.store(entry.released_ms, Ordering::Relaxed);
                        cell.seq.store(pos + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => pos = current,
                }
            } else if dif < 0 {
                if self.head.load(Ordering::Relaxed) + self.mask < pos {
                    return Err(entry);
                }
                // Not full: a consumer has claimed this cell and not yet
                // handed it back (it was preempted between its two steps).
                // Wait for it; it never depends on us.
                spins = backoff(spins);
                pos = self.tail.load(Ordering::Relaxed);
            } else {
                pos = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Removes the head entry if `take` accepts it.
    pub fn pop_if(&self, mut take: impl FnMut(&Entry) -> bool) -> Pop {
        let mut pos = self.head.load(Ordering::Relaxed);
        loop {
            let cell = self.cell(pos);
            let seq = cell.seq.load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos + 1) as i64;
            if dif == 0 {
                let entry = Entry {
                    slot: cell.slot.load(Ordering::Relaxed),
                    released_ms: cell.released_ms.load(Ordering::Relaxed),
                };
                if !take(&entry) {
                    // Only meaningful if the entry was still the head: re-check
                    // so a stale read is never reported as the head.
                    if self.head.load(Ordering::Relaxed) == pos {
                        return Pop::Refused(entry);
                    }
                    pos = self.head.load(Ordering::Relaxed);
                    continue;
                }
                match self.head.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        cell.seq.store(pos + self.mask + 1, Ordering::Release);
                        return Pop::Taken(entry);
                    }
                    Err(current) => pos = current,
                }
            } else if dif < 0 {
                // A queue whose tail is past our head is not empty: a
                // producer holds the head cell and will publish it.
                return if self.tail.load(Ordering::Relaxed) > pos {
                    Pop::Busy
                } else {
                    Pop::Empty
                };
            } else {
                pos = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// Removes the head entry, whatever it is (`None` if empty or busy).
    pub fn pop(&self) -> Option<Entry> {
        match self.pop_if(|_| true) {
            Pop::Taken(e) => Some(e),
            _ => None,
        }
    }

    /// The head entry, without removing it.
    pub fn peek(&self) -> Pop {
        self.pop_if(|_| false)
    }
}

/// Spins briefly, then yields the CPU; returns the new spin count.
fn backoff(spins: u32) -> u32 {
    if spins < super::sync::SPIN_LIMIT {
        super::sync::spin_loop();
    } else {
        super::sync::yield_now();
    }
    spins.saturating_add(1)
}
