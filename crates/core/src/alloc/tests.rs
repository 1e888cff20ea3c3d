use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Barrier;

use super::*;

fn ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + n)
}

fn key(n: &str) -> AttachmentKey {
    AttachmentKey::new(n, "eth0")
}

fn no_cooldown(cap: usize) -> Allocator {
    Allocator::new(cap, Duration::ZERO)
}

#[test]
fn same_key_same_address() {
    let a = no_cooldown(8);
    a.grow(0, &[ip(10), ip(11)]).unwrap();
    let first = a.allocate(&key("c1")).unwrap();
    assert_eq!(a.allocate(&key("c1")).unwrap(), first);
    assert_eq!(a.usage(), Usage { total: 2, used: 1 });
    assert_eq!(a.lookup(&key("c1")), Some(first));
}

#[test]
fn exhaustion_then_release() {
    let a = no_cooldown(8);
    a.grow(1, &[ip(10)]).unwrap();
    let l1 = a.allocate(&key("c1")).unwrap();
    assert_eq!(l1.eni_index, 1);
    assert_eq!(
        a.allocate(&key("c2")),
        Err(AllocError::Exhausted { total: 1 })
    );
    assert_eq!(a.release(&key("c1")), Some(l1));
    assert_eq!(a.release(&key("c1")), None);
    assert_eq!(a.allocate(&key("c2")).unwrap().addr, ip(10));
}

#[test]
fn cooling_addresses_are_not_reused_while_others_are_free() {
    let a = Allocator::new(8, Duration::from_secs(30));
    a.grow(0, &[ip(10), ip(11), ip(12)]).unwrap();
    let first = a.allocate(&key("a")).unwrap().addr;
    a.release(&key("a"));
    let next: HashSet<_> = ["b", "c"]
        .iter()
        .map(|k| a.allocate(&key(k)).unwrap().addr)
        .collect();
    assert!(
        !next.contains(&first),
        "a cooling address was handed out while fresh ones were free"
    );
    assert_eq!(a.cooldown_bypassed(), 0);
}

/// Addresses added while others cool are never stuck behind a cooling one
/// (they wait in a ring of their own), so a growing pool never bypasses
/// the cooldown.
#[test]
fn addresses_added_later_come_before_cooling_ones() {
    let a = Allocator::new(64, Duration::from_secs(30));
    a.grow(0, &[ip(10), ip(11)]).unwrap();
    let first = a.allocate(&key("a")).unwrap().addr;
    a.allocate(&key("b")).unwrap();
    a.release(&key("a"));
    a.grow(1, &(20..40).map(ip).collect::<Vec<_>>()).unwrap();
    for n in 0..20 {
        let got = a.allocate(&key(&format!("n{n}"))).unwrap().addr;
        assert_ne!(got, first, "a cooling address came before a fresh one");
    }
    assert_eq!(a.cooldown_bypassed(), 0);
    // Only now, with nothing else left, the cooling one is taken.
    assert_eq!(a.allocate(&key("last")).unwrap().addr, first);
    assert_eq!(a.cooldown_bypassed(), 1);
}

#[test]
fn cooldown_never_starves_and_takes_the_longest_rested() {
    let a = Allocator::new(8, Duration::from_secs(30));
    a.grow(0, &[ip(10), ip(11), ip(12)]).unwrap();
    for k in ["a", "b", "c"] {
        a.allocate(&key(k)).unwrap();
    }
    let order: Vec<_> = ["b", "a", "c"]
        .iter()
        .map(|k| a.release(&key(k)).unwrap().addr)
        .collect();
    // Only cooling addresses are left: ADD still succeeds, oldest first.
    for (i, expect) in order.iter().enumerate() {
        let got = a.allocate(&key(&format!("n{i}"))).unwrap().addr;
        assert_eq!(got, *expect);
    }
    assert_eq!(a.cooldown_bypassed(), 3);
}

#[test]
fn cooled_addresses_come_back_without_counting_a_bypass() {
    let a = Allocator::new(8, Duration::from_millis(20));
    a.grow(0, &[ip(10)]).unwrap();
    a.allocate(&key("a")).unwrap();
    a.release(&key("a"));
    std::thread::sleep(Duration::from_millis(40));
    a.allocate(&key("b")).unwrap();
    assert_eq!(a.cooldown_bypassed(), 0);
}

#[test]
fn shrink_never_takes_held_addresses() {
    let a = no_cooldown(8);
    a.grow(0, &[ip(10), ip(11)]).unwrap();
    let held = a.allocate(&key("c")).unwrap().addr;
    let removed = a.shrink(&[ip(10), ip(11)]);
    assert_eq!(removed.len(), 1);
    assert!(!removed.contains(&held));
    assert_eq!(a.usage(), Usage { total: 1, used: 1 });
    // The removed address is never handed out again.
    assert_eq!(
        a.allocate(&key("d")),
        Err(AllocError::Exhausted { total: 1 })
    );
    // Growing it back makes it available again.
    a.grow(0, &removed).unwrap();
    assert_eq!(a.allocate(&key("d")).unwrap().addr, removed[0]);
}

#[test]
fn grow_ignores_duplicates_and_respects_capacity() {
    let a = no_cooldown(3);
    a.grow(0, &[ip(10)]).unwrap();
    a.grow(0, &[ip(10), ip(11), ip(11)]).unwrap();
    assert_eq!(a.usage().total, 2);
    assert_eq!(a.free_by_eni()[&0].len(), 2);
    assert_eq!(
        a.grow(1, &[ip(20), ip(21)]),
        Err(GrowError::Capacity { capacity: 3 })
    );
    assert_eq!(a.usage().total, 2, "a failed grow adds nothing");
}

#[test]
fn free_slot_of_a_slot_not_held_changes_nothing() {
    let a = no_cooldown(4);
    a.grow(0, &[ip(10)]).unwrap();
    assert!(!a.free_slot(0));
    assert!(!a.free_slot(999));
    let id = a.alloc_slot().unwrap();
    assert!(a.free_slot(id));
    assert!(!a.free_slot(id), "double free refused");
    assert_eq!(a.usage(), Usage { total: 1, used: 0 });
}

/// Many threads doing random alloc / free / grow / shrink. Every thread
/// checks on each operation that a slot it got was not held by anyone
/// (`owned` flags flip exactly once per transfer); after every round all
/// threads stop at a barrier and one checks the whole pool: every address
/// is exactly one of held, free or removed, and none is lost.
#[test]
fn concurrent_random_operations_never_double_allocate_or_lose() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 300;
    const OPS_PER_ROUND: usize = 40;
    const UNIVERSE: u32 = 256;
    let a = Allocator::new(UNIVERSE as usize, Duration::from_millis(1));
    // Start with half the universe in the pool.
    a.grow(0, &(0..UNIVERSE / 2).map(ip).collect::<Vec<_>>())
        .unwrap();
    let owned: Vec<AtomicBool> = (0..UNIVERSE).map(|_| AtomicBool::new(false)).collect();
    let in_pool: Vec<AtomicBool> = (0..UNIVERSE)
        .map(|i| AtomicBool::new(i < UNIVERSE / 2))
        .collect();
    let admin = Mutex::new(());
    let barrier = Barrier::new(THREADS);
    let checks = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (a, owned, in_pool, admin, barrier, checks) =
                (&a, &owned, &in_pool, &admin, &barrier, &checks);
            s.spawn(move || {
                let mut rng = (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut mine: Vec<(AttachmentKey, Ipv4Addr)> = Vec::new();
                let mut serial = 0u64;
                for round in 0..ROUNDS {
                    for _ in 0..OPS_PER_ROUND {
                        match next() % 10 {
                            0..=4 => {
                                serial += 1;
                                let k = AttachmentKey::new(format!("t{t}-{serial}"), "eth0");
                                if let Ok(lease) = a.allocate(&k) {
                                    let n = u32::from(lease.addr) - 0x0a00_0000;
                                    assert!(
                                        !owned[n as usize].swap(true, Ordering::SeqCst),
                                        "{} handed out twice",
                                        lease.addr
                                    );
                                    mine.push((k, lease.addr));
                                }
                            }
                            5..=7 if !mine.is_empty() => {
                                let (k, addr) = mine.swap_remove(next() as usize % mine.len());
                                let n = u32::from(addr) - 0x0a00_0000;
                                // Clear the flag before the slot can be reused.
                                assert!(owned[n as usize].swap(false, Ordering::SeqCst));
                                assert_eq!(a.release(&k).map(|l| l.addr), Some(addr));
                            }
                            8 => {
                                let _g = admin.lock().unwrap();
                                let n = (next() % UNIVERSE as u64) as u32;
                                if !in_pool[n as usize].load(Ordering::SeqCst)
                                    && a.grow(1, &[ip(n)]).is_ok()
                                {
                                    in_pool[n as usize].store(true, Ordering::SeqCst);
                                }
                            }
                            _ => {
                                let _g = admin.lock().unwrap();
                                let n = (next() % UNIVERSE as u64) as u32;
                                if in_pool[n as usize].load(Ordering::SeqCst) {
                                    // Mark it out first: an allocate racing with the
                                    // shrink must either fail to get it or keep it.
                                    in_pool[n as usize].store(false, Ordering::SeqCst);
                                    if a.shrink(&[ip(n)]).is_empty() {
                                        in_pool[n as usize].store(true, Ordering::SeqCst);
                                    }
                                }
                            }
                        }
                    }
                    if barrier.wait().is_leader() {
                        check_pool(a, owned, in_pool);
                        checks.fetch_add(1, Ordering::Relaxed);
                    }
                    barrier.wait();
                    let _ = round;
                }
                for (k, addr) in mine {
                    owned[(u32::from(addr) - 0x0a00_0000) as usize].store(false, Ordering::SeqCst);
                    a.release(&k);
                }
            });
        }
    });
    check_pool(&a, &owned, &in_pool);
    assert_eq!(checks.load(Ordering::Relaxed), ROUNDS);
    assert_eq!(a.usage().used, 0);
}

fn check_pool(a: &Allocator, owned: &[AtomicBool], in_pool: &[AtomicBool]) {
    let holders = a.holders();
    let held: HashSet<Ipv4Addr> = holders.iter().map(|(_, l)| l.addr).collect();
    assert_eq!(held.len(), holders.len(), "an address is held by two keys");
    let free: HashSet<Ipv4Addr> = a.free_by_eni().into_values().flatten().collect();
    assert!(held.is_disjoint(&free), "an address is both held and free");
    for (n, flag) in in_pool.iter().enumerate() {
        let addr = ip(n as u32);
        let pooled = flag.load(Ordering::SeqCst);
        assert_eq!(
            held.contains(&addr) || free.contains(&addr),
            pooled,
            "{addr} lost or leaked (in pool: {pooled})"
        );
        assert_eq!(
            owned[n].load(Ordering::SeqCst),
            held.contains(&addr),
            "{addr} ownership differs"
        );
    }
    let usage = a.usage();
    assert_eq!(usage.used, held.len());
    assert_eq!(usage.total, held.len() + free.len());
}

mod ring {
    use super::super::ring::*;

    fn e(slot: u32, t: u64) -> Entry {
        Entry {
            slot,
            released_ms: t,
        }
    }

    #[test]
    fn fifo_and_bounded() {
        let r = Ring::with_capacity(3);
        assert_eq!(r.capacity(), 4);
        for i in 0..4 {
            r.push(e(i, i as u64)).unwrap();
        }
        assert_eq!(r.push(e(9, 9)), Err(e(9, 9)));
        assert_eq!(r.peek(), Pop::Refused(e(0, 0)));
        for i in 0..4 {
            assert_eq!(r.pop(), Some(e(i, i as u64)));
        }
        assert_eq!(r.pop(), None);
        // Wraps around.
        for round in 0..10u32 {
            r.push(e(round, 0)).unwrap();
            assert_eq!(r.pop(), Some(e(round, 0)));
        }
    }

    #[test]
    fn pop_if_refuses_without_removing() {
        let r = Ring::with_capacity(4);
        r.push(e(1, 100)).unwrap();
        r.push(e(2, 200)).unwrap();
        assert_eq!(r.pop_if(|x| x.released_ms < 50), Pop::Refused(e(1, 100)));
        assert_eq!(r.pop_if(|x| x.released_ms < 150), Pop::Taken(e(1, 100)));
        assert_eq!(r.pop_if(|x| x.released_ms < 150), Pop::Refused(e(2, 200)));
    }

    #[test]
    fn concurrent_producers_and_consumers_lose_nothing() {
        use std::sync::Arc;
        let r = Arc::new(Ring::with_capacity(1024));
        let per = 20_000u32;
        let threads = 4u32;
        let producers: Vec<_> = (0..threads)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        let mut item = e(t * per + i, 0);
                        while let Err(back) = r.push(item) {
                            item = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..threads)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while got.len() < per as usize {
                        match r.pop() {
                            Some(x) => got.push(x.slot),
                            None => std::thread::yield_now(),
                        }
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<u32> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..threads * per).collect::<Vec<_>>());
    }
}

/// More threads than cores churning a pool far larger than what they hold
/// together: an allocation must never fail, even when a releasing thread is
/// preempted halfway through its push (the case that makes a ring's head
/// look empty while entries wait behind it).
#[test]
fn churn_never_fails_while_addresses_are_free() {
    for cooldown in [Duration::ZERO, Duration::from_secs(30)] {
        let a = Allocator::new(64, cooldown);
        a.grow(0, &(0..64).map(ip).collect::<Vec<_>>()).unwrap();
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        let Some(id) = a.alloc_slot() else {
                            panic!(
                                "allocation failed with cooldown {cooldown:?}: {:?}",
                                a.usage()
                            );
                        };
                        assert!(a.free_slot(id));
                    }
                });
            }
        });
        assert_eq!(a.usage(), Usage { total: 64, used: 0 });
    }
}

/// Addresses held before a restart are reserved before the pool is filled:
/// they join the pool held by their owner and are never handed out.
#[test]
fn reserved_addresses_join_the_pool_held() {
    let a = no_cooldown(8);
    a.reserve(&key("old"), ip(11)).unwrap();
    assert!(matches!(
        a.reserve(&key("other"), ip(11)),
        Err(ReserveError::Taken { .. })
    ));
    a.grow(0, &[ip(10), ip(11), ip(12)]).unwrap();
    assert_eq!(a.lookup(&key("old")).map(|l| l.addr), Some(ip(11)));
    assert_eq!(a.usage(), Usage { total: 3, used: 1 });
    let others: HashSet<_> = ["x", "y"]
        .iter()
        .map(|k| a.allocate(&key(k)).unwrap().addr)
        .collect();
    assert!(!others.contains(&ip(11)));
    assert!(a.allocate(&key("z")).is_err(), "only two were free");
    // Released like any other.
    assert_eq!(a.release(&key("old")).map(|l| l.addr), Some(ip(11)));
    assert_eq!(a.allocate(&key("z")).unwrap().addr, ip(11));
    // Too late once the address is in the pool.
    assert!(matches!(
        a.reserve(&key("late"), ip(10)),
        Err(ReserveError::InPool { .. })
    ));
}

/// A reservation whose address never joins the pool is dropped by release.
#[test]
fn an_unfulfilled_reservation_is_released() {
    let a = no_cooldown(8);
    a.reserve(&key("old"), ip(50)).unwrap();
    assert_eq!(a.release(&key("old")), None);
    a.grow(0, &[ip(50)]).unwrap();
    assert_eq!(a.usage(), Usage { total: 1, used: 0 });
}

/// A release decided before a retried ADD of the same key must not free
/// the address that ADD was given.
#[test]
fn a_late_release_frees_only_the_address_it_was_for() {
    let a = no_cooldown(8);
    a.reserve(&key("k"), ip(50)).unwrap();
    a.grow(0, &[ip(10)]).unwrap();
    let now = a.allocate(&key("k")).unwrap().addr;
    assert_eq!(now, ip(10));
    // The release of the reservation (ip 50) drops the reservation only.
    assert!(a.release_held(&key("k"), ip(50)));
    assert_eq!(a.lookup(&key("k")).map(|l| l.addr), Some(ip(10)));
    assert!(
        !a.release_held(&key("k"), ip(50)),
        "nothing left to release"
    );
    // And the held address goes when it is the one named.
    assert!(a.release_held(&key("k"), ip(10)));
    assert_eq!(a.lookup(&key("k")), None);
}

/// A reservation that joins the pool after its key was given another
/// address is not held twice: it rests and is handed out again.
#[test]
fn a_stale_reservation_joins_the_pool_free() {
    let a = no_cooldown(8);
    a.reserve(&key("k"), ip(50)).unwrap();
    a.grow(0, &[ip(10)]).unwrap();
    assert_eq!(a.allocate(&key("k")).unwrap().addr, ip(10));
    a.grow(0, &[ip(50)]).unwrap();
    assert_eq!(a.lookup(&key("k")).map(|l| l.addr), Some(ip(10)));
    assert_eq!(a.usage(), Usage { total: 2, used: 1 });
    assert_eq!(a.allocate(&key("other")).unwrap().addr, ip(50));
}

#[test]
fn released_addresses_count_as_cooling_until_taken() {
    let a = Allocator::new(8, Duration::from_secs(60));
    a.grow(0, &[ip(10), ip(11), ip(12)]).unwrap();
    assert_eq!(a.cooling(), 0, "never-used addresses are rested");
    a.allocate(&key("c1")).unwrap();
    a.allocate(&key("c2")).unwrap();
    assert_eq!(a.cooling(), 0);
    a.release(&key("c1"));
    a.release(&key("c2"));
    assert_eq!(a.cooling(), 2);
    // The rested one goes first, then a cooling one is taken anyway.
    a.allocate(&key("c3")).unwrap();
    assert_eq!(a.cooling(), 2);
    a.allocate(&key("c4")).unwrap();
    assert_eq!(a.cooling(), 1);
    assert_eq!(a.cooldown_bypassed(), 1);
    let b = no_cooldown(4);
    b.grow(0, &[ip(20)]).unwrap();
    b.allocate(&key("d")).unwrap();
    b.release(&key("d"));
    assert_eq!(b.cooling(), 0, "no cooldown: nothing rests");
}
