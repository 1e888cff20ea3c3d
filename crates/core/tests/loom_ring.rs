//! Model-checks the allocator's lock-free ring with loom: every interleaving
//! of the threads below (bounded by loom's preemption limit) must keep FIFO
//! order per producer and neither lose nor duplicate an entry.
//!
//! The ring's source is compiled here against loom's atomics (it is written
//! against `super::sync`), so the daemon itself needs no loom cfg.
// The model uses part of the ring's API, and loom's SPIN_LIMIT of 0 makes
// the spin comparison constant; both are expected here.
#![allow(dead_code, clippy::absurd_extreme_comparisons)]

mod sync {
    pub use loom::hint::spin_loop;
    pub use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    pub use loom::thread::yield_now;
    /// Every spin is a scheduling point for loom: yield at once.
    pub const SPIN_LIMIT: u32 = 0;
}
#[path = "../src/alloc/ring.rs"]
mod ring;

use loom::sync::Arc;
use loom::thread;
use ring::{Entry, Pop, Ring};

fn e(slot: u32) -> Entry {
    Entry {
        slot,
        released_ms: slot as u64,
    }
}

/// Two producers and one consumer racing on a ring of two cells (so pushes
/// also race with wrap-around): everything pushed is popped exactly once.
#[test]
fn concurrent_push_and_pop_lose_and_duplicate_nothing() {
    // Bounded preemptions keep the search to seconds; bugs in CAS loops
    // show up within two or three preemptions.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let ring = Arc::new(Ring::with_capacity(2));
        let producers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|slot| {
                let ring = ring.clone();
                thread::spawn(move || {
                    while ring.push(e(slot)).is_err() {
                        thread::yield_now();
                    }
                })
            })
            .collect();
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || ring.pop().map(|x| x.slot))
        };
        for p in producers {
            p.join().unwrap();
        }
        let mut seen: Vec<u32> = consumer.join().unwrap().into_iter().collect();
        while let Some(x) = ring.pop() {
            seen.push(x.slot);
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2]);
    });
}

/// Two consumers race for one entry with a conditional pop: exactly one
/// takes it; a refusal never removes it.
#[test]
fn conditional_pops_take_an_entry_once() {
    loom::model(|| {
        let ring = Arc::new(Ring::with_capacity(2));
        ring.push(e(7)).unwrap();
        let racers: Vec<_> = [true, false]
            .into_iter()
            .map(|accept| {
                let ring = ring.clone();
                thread::spawn(move || ring.pop_if(|_| accept))
            })
            .collect();
        let results: Vec<Pop> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let taken = results
            .iter()
            .filter(|r| matches!(r, Pop::Taken(_)))
            .count();
        assert_eq!(taken, 1, "{results:?}");
        assert_eq!(ring.pop(), None);
    });
}

/// A consumer racing a producer sees either nothing or the whole entry,
/// never a torn one.
#[test]
fn a_pop_never_sees_a_half_written_entry() {
    loom::model(|| {
        let ring = Arc::new(Ring::with_capacity(2));
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || ring.push(e(3)).unwrap())
        };
        let got = ring.pop();
        producer.join().unwrap();
        match got {
            Some(x) => assert_eq!(x, e(3)),
            None => assert_eq!(ring.pop(), Some(e(3))),
        }
    });
}
