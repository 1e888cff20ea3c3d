//! The address allocator against Mutex baselines, in the same benchmark
//! groups: alloc+free pairs, single-threaded and with 2, 4 and 8 threads
//! contending, for pools of 64, 750 and 16 384 addresses.
//!
//! Every measurement is the wall time of `iters` pairs spread over the
//! threads, divided by `iters`: nanoseconds per pair for the whole machine,
//! so a falling number as threads are added means throughput grows.
//!
//! - `slot/*`: the allocator's slot path (`alloc_slot` + `free_slot`) vs a
//!   `Mutex<Vec>` free list.
//! - `keyed/*`: the path the pod service uses, by attachment key
//!   (`allocate` + `release`) vs a `Mutex<HashMap>` of holders over a free list.
//! - `lookup/*`: finding the address a key holds (what a repeated ADD and
//!   every DEL start with) vs the same `Mutex<HashMap>`.
//! - `cooldown/*`: the slot path with a 30 s cooldown, where every free
//!   address is still resting and each alloc takes the longest-rested one.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ipamd::alloc::{Allocator, AttachmentKey};

const POOLS: [usize; 3] = [64, 750, 16_384];
const THREADS: [usize; 4] = [1, 2, 4, 8];

fn addrs(n: usize) -> Vec<Ipv4Addr> {
    (0..n as u32)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
        .collect()
}

fn allocator(pool: usize, cooldown: Duration) -> Allocator {
    let a = Allocator::new(pool, cooldown);
    a.grow(0, &addrs(pool)).expect("pool fits");
    a
}

/// Runs `pair` `iters` times over `threads` threads; returns the wall time.
fn contended(iters: u64, threads: usize, pair: impl Fn(usize) + Sync) -> Duration {
    let per = iters.div_ceil(threads as u64);
    let start_line = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (pair, start_line) = (&pair, &start_line);
            s.spawn(move || {
                start_line.wait();
                for _ in 0..per {
                    pair(t);
                }
            });
        }
        start_line.wait();
        let started = Instant::now();
        // The scope joins every thread before it returns.
        started
    })
    .elapsed()
}

/// A free list behind one lock: what a straightforward IPAM does.
struct MutexVec(Mutex<Vec<u32>>);

impl MutexVec {
    fn new(pool: usize) -> Self {
        Self(Mutex::new((0..pool as u32).collect()))
    }
    fn alloc(&self) -> Option<u32> {
        self.0.lock().unwrap().pop()
    }
    fn free(&self, slot: u32) {
        self.0.lock().unwrap().push(slot)
    }
}

/// Holders by key plus a free list, behind one lock.
struct MutexMap(Mutex<(HashMap<AttachmentKey, u32>, Vec<u32>)>);

impl MutexMap {
    fn new(pool: usize) -> Self {
        Self(Mutex::new((HashMap::new(), (0..pool as u32).collect())))
    }
    fn allocate(&self, key: &AttachmentKey) -> Option<u32> {
        let mut g = self.0.lock().unwrap();
        if let Some(&a) = g.0.get(key) {
            return Some(a);
        }
        let a = g.1.pop()?;
        g.0.insert(key.clone(), a);
        Some(a)
    }
    fn release(&self, key: &AttachmentKey) {
        let mut g = self.0.lock().unwrap();
        if let Some(a) = g.0.remove(key) {
            g.1.push(a);
        }
    }
    fn lookup(&self, key: &AttachmentKey) -> Option<u32> {
        self.0.lock().unwrap().0.get(key).copied()
    }
}

fn keys(threads: usize) -> Vec<AttachmentKey> {
    (0..threads)
        .map(|t| AttachmentKey::new(format!("{t:064x}"), "eth0"))
        .collect()
}

fn slot_group(c: &mut Criterion) {
    for pool in POOLS {
        let mut g = c.benchmark_group(format!("slot/{pool}"));
        for threads in THREADS {
            let a = allocator(pool, Duration::ZERO);
            g.bench_with_input(BenchmarkId::new("vpc-cni", threads), &threads, |b, &t| {
                b.iter_custom(|iters| {
                    contended(iters, t, |_| {
                        let s = a.alloc_slot().expect("pool larger than threads");
                        a.free_slot(black_box(s));
                    })
                })
            });
            let m = MutexVec::new(pool);
            g.bench_with_input(
                BenchmarkId::new("Mutex<Vec>", threads),
                &threads,
                |b, &t| {
                    b.iter_custom(|iters| {
                        contended(iters, t, |_| {
                            let s = m.alloc().expect("pool larger than threads");
                            m.free(black_box(s));
                        })
                    })
                },
            );
        }
        g.finish();
    }
}

fn keyed_group(c: &mut Criterion) {
    for pool in POOLS {
        let mut g = c.benchmark_group(format!("keyed/{pool}"));
        for threads in THREADS {
            let ks = keys(threads);
            let a = allocator(pool, Duration::ZERO);
            g.bench_with_input(BenchmarkId::new("vpc-cni", threads), &threads, |b, &t| {
                b.iter_custom(|iters| {
                    contended(iters, t, |i| {
                        black_box(a.allocate(&ks[i]).expect("pool larger than threads"));
                        a.release(&ks[i]);
                    })
                })
            });
            let m = MutexMap::new(pool);
            g.bench_with_input(
                BenchmarkId::new("Mutex<HashMap>", threads),
                &threads,
                |b, &t| {
                    b.iter_custom(|iters| {
                        contended(iters, t, |i| {
                            black_box(m.allocate(&ks[i]).expect("pool larger than threads"));
                            m.release(&ks[i]);
                        })
                    })
                },
            );
        }
        g.finish();
    }
}

fn lookup_group(c: &mut Criterion) {
    let pool = 750;
    let mut g = c.benchmark_group(format!("lookup/{pool}"));
    for threads in THREADS {
        let ks = keys(threads);
        let a = allocator(pool, Duration::ZERO);
        let m = MutexMap::new(pool);
        for k in &ks {
            a.allocate(k).expect("pool larger than threads");
            m.allocate(k).expect("pool larger than threads");
        }
        g.bench_with_input(BenchmarkId::new("vpc-cni", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                contended(iters, t, |i| {
                    black_box(a.lookup(&ks[i]).expect("held"));
                })
            })
        });
        g.bench_with_input(
            BenchmarkId::new("Mutex<HashMap>", threads),
            &threads,
            |b, &t| {
                b.iter_custom(|iters| {
                    contended(iters, t, |i| {
                        black_box(m.lookup(&ks[i]).expect("held"));
                    })
                })
            },
        );
    }
    g.finish();
}

fn cooldown_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("cooldown/750");
    for threads in [1, 2] {
        let a = allocator(750, Duration::from_secs(30));
        g.bench_with_input(BenchmarkId::new("vpc-cni", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                contended(iters, t, |_| {
                    let s = a.alloc_slot().expect("cooldown never starves");
                    a.free_slot(black_box(s));
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = slot_group, keyed_group, lookup_group, cooldown_group
}
criterion_main!(benches);
