//! Counters of what the daemon did, passed around as a handle (no globals).
//!
//! Kept to plain atomics for now; the Prometheus `/metrics` endpoint reads
//! these same numbers when it arrives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cni_plugin::wire::Command;
use serde_json::{json, Value};

/// Latency bucket upper bounds in microseconds (the last one is +Inf).
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

#[derive(Default)]
struct PerCommand {
    calls: AtomicU64,
    errors: AtomicU64,
    total_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len()],
}

/// The daemon's counters.
#[derive(Default)]
pub struct Metrics {
    per: [PerCommand; 6],
}

fn slot(command: Command) -> usize {
    match command {
        Command::Add => 0,
        Command::Del => 1,
        Command::Check => 2,
        Command::Status => 3,
        Command::Gc => 4,
        Command::Introspect => 5,
    }
}

const COMMANDS: [Command; 6] = [
    Command::Add,
    Command::Del,
    Command::Check,
    Command::Status,
    Command::Gc,
    Command::Introspect,
];

impl Metrics {
    /// Records one handled request.
    pub fn observe(&self, command: Command, took: Duration, error_code: Option<u32>) {
        let p = &self.per[slot(command)];
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        p.calls.fetch_add(1, Ordering::Relaxed);
        p.total_us.fetch_add(us, Ordering::Relaxed);
        if error_code.is_some() {
            p.errors.fetch_add(1, Ordering::Relaxed);
        }
        let b = BUCKETS_US
            .iter()
            .position(|&ub| us <= ub)
            .unwrap_or(BUCKETS_US.len() - 1);
        p.buckets[b].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls and errors of one command.
    pub fn calls(&self, command: Command) -> (u64, u64) {
        let p = &self.per[slot(command)];
        (
            p.calls.load(Ordering::Relaxed),
            p.errors.load(Ordering::Relaxed),
        )
    }

    /// A JSON view for `ipamd status`.
    pub fn snapshot(&self) -> Value {
        let mut out = serde_json::Map::new();
        for c in COMMANDS {
            let p = &self.per[slot(c)];
            let calls = p.calls.load(Ordering::Relaxed);
            if calls == 0 {
                continue;
            }
            out.insert(
                c.as_str().to_string(),
                json!({
                    "calls": calls,
                    "errors": p.errors.load(Ordering::Relaxed),
                    "meanUs": p.total_us.load(Ordering::Relaxed) / calls,
                }),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_and_errors() {
        let m = Metrics::default();
        m.observe(Command::Add, Duration::from_micros(300), None);
        m.observe(Command::Add, Duration::from_micros(900), Some(11));
        assert_eq!(m.calls(Command::Add), (2, 1));
        assert_eq!(m.snapshot()["ADD"]["meanUs"], 600);
        assert!(m.snapshot().get("DEL").is_none());
    }
}
