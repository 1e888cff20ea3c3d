//! What recording a CNI request costs on the pod path: the Prometheus
//! families (`Metrics::observe`: a counter by command/result/code, a
//! histogram, per-command totals for `ipamd status`) against the plain
//! atomic counters they replaced, in the same group. Plus one scrape
//! (`Metrics::encode`) of a registry holding every family, for scale.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cni_plugin::wire::Command;
use criterion::{criterion_group, criterion_main, Criterion};
use ipamd::metrics::{CallOutcome, Metrics};

/// The previous `ipamd::metrics`: calls, errors, total time and a
/// 10-bucket histogram per command, all relaxed atomics.
#[derive(Default)]
struct AtomicBaseline {
    calls: AtomicU64,
    errors: AtomicU64,
    total_us: AtomicU64,
    buckets: [AtomicU64; 10],
}

const BUCKETS_US: [u64; 10] = [
    250,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    50_000,
    250_000,
    1_000_000,
    u64::MAX,
];

impl AtomicBaseline {
    fn observe(&self, took: Duration, error: Option<u32>) {
        let us = took.as_micros() as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        if error.is_some() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let b = BUCKETS_US.iter().position(|&ub| us <= ub).unwrap_or(9);
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
    }
}

fn observe(c: &mut Criterion) {
    let mut g = c.benchmark_group("observe");
    g.measurement_time(Duration::from_secs(3));
    let took = Duration::from_micros(800);
    let baseline = AtomicBaseline::default();
    g.bench_function("atomic-baseline", |b| {
        b.iter(|| baseline.observe(black_box(took), black_box(None)))
    });
    let m = Metrics::new();
    g.bench_function("prometheus", |b| {
        b.iter(|| m.observe(black_box(Command::Add), black_box(took), black_box(None)))
    });
    g.finish();
}

fn scrape(c: &mut Criterion) {
    let m = Metrics::new();
    let t = Duration::from_millis(2);
    for command in [Command::Add, Command::Del, Command::Check, Command::Status] {
        m.observe(command, t, None);
        m.observe(command, t, Some(11));
    }
    for op in ["node", "enis", "attach_eni", "assign_ips", "unassign_ips"] {
        m.ec2().observe_call(op, CallOutcome::Ok, t);
    }
    let size = m.encode().len();
    let mut g = c.benchmark_group("scrape");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function(format!("encode-{size}-bytes"), |b| {
        b.iter(|| black_box(m.encode()))
    });
    g.finish();
}

criterion_group!(benches, observe, scrape);
criterion_main!(benches);
