//! Where ipamd's time goes inside one CNI call, phase by phase.
//!
//! A [`Laps`] stopwatch travels with a call from the moment the server
//! accepts its connection until the answer is written; each part of the path
//! closes its phase with [`Laps::lap`]. The totals per command and phase are
//! kept in [`CallTimings`] (plain atomics: a lap costs one clock read and one
//! add) and shown in `ipamd status --json` under `timings`, where the
//! pod-churn benchmark reads them to account for every microsecond of an ADD.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cni_plugin::wire::Command;
use serde_json::{json, Value};

/// One step of a call, in the order a call meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// From `accept` returning to the connection's task running.
    Accept,
    /// Reading the request and checking the peer.
    Read,
    /// Decoding the request frame.
    Decode,
    /// The pod table (claiming the attachment) and argument checks.
    Begin,
    /// Taking an address from the allocator (waiting for the pool to grow
    /// when it is empty).
    Alloc,
    /// Building the pod's record and result and queueing the record to the
    /// journal's writer (whose wake-up may preempt the caller here).
    Record,
    /// The NetworkPolicy hook.
    Policy,
    /// Creating the veth pair (ADD) or removing the host route and rules (DEL).
    Veth,
    /// The pod side: entering its namespace and configuring `eth0`.
    PodSide,
    /// The host side: link up, alias, route and rules.
    HostSide,
    /// Waiting for the checkpoint's journal to be durable, after the rest.
    Journal,
    /// Bookkeeping after the work (pod table, metrics, logs).
    Finish,
    /// Encoding and writing the answer.
    Respond,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 13] = [
        Phase::Accept,
        Phase::Read,
        Phase::Decode,
        Phase::Begin,
        Phase::Alloc,
        Phase::Record,
        Phase::Policy,
        Phase::Veth,
        Phase::PodSide,
        Phase::HostSide,
        Phase::Journal,
        Phase::Finish,
        Phase::Respond,
    ];

    /// Its name in `ipamd status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Accept => "accept",
            Phase::Read => "read",
            Phase::Decode => "decode",
            Phase::Begin => "begin",
            Phase::Alloc => "alloc",
            Phase::Record => "record",
            Phase::Policy => "policy",
            Phase::Veth => "veth",
            Phase::PodSide => "podSide",
            Phase::HostSide => "hostSide",
            Phase::Journal => "journal",
            Phase::Finish => "finish",
            Phase::Respond => "respond",
        }
    }
}

const PHASES: usize = Phase::ALL.len();

/// A call's stopwatch: time spent per phase since it started.
#[derive(Debug, Clone)]
pub struct Laps {
    last: Instant,
    spent_ns: [u64; PHASES],
}

impl Laps {
    /// Starts at `at` (when the connection was accepted).
    pub fn starting_at(at: Instant) -> Self {
        Laps {
            last: at,
            spent_ns: [0; PHASES],
        }
    }

    /// Charges the time since the previous lap to `phase`.
    pub fn lap(&mut self, phase: Phase) {
        let now = Instant::now();
        let took = now.saturating_duration_since(self.last);
        self.spent_ns[phase as usize] += took.as_nanos() as u64;
        self.last = now;
    }
}

impl Default for Laps {
    fn default() -> Self {
        Laps::starting_at(Instant::now())
    }
}

#[derive(Default)]
struct PerCommand {
    calls: AtomicU64,
    ns: [AtomicU64; PHASES],
}

/// Totals per command and phase, for every call answered so far.
#[derive(Default)]
pub struct CallTimings {
    add: PerCommand,
    del: PerCommand,
    other: PerCommand,
}

impl CallTimings {
    fn of(&self, command: Command) -> &PerCommand {
        match command {
            Command::Add => &self.add,
            Command::Del => &self.del,
            _ => &self.other,
        }
    }

    /// Adds one finished call.
    pub fn record(&self, command: Command, laps: &Laps) {
        let per = self.of(command);
        per.calls.fetch_add(1, Ordering::Relaxed);
        for (total, spent) in per.ns.iter().zip(laps.spent_ns) {
            if spent > 0 {
                total.fetch_add(spent, Ordering::Relaxed);
            }
        }
    }

    /// `{"ADD": {"calls": n, "totalNs": {"accept": …, …}}, "DEL": …}`.
    pub fn snapshot(&self) -> Value {
        let one = |p: &PerCommand| {
            let phases: serde_json::Map<String, Value> = Phase::ALL
                .iter()
                .map(|ph| {
                    let ns = p.ns[*ph as usize].load(Ordering::Relaxed);
                    (ph.as_str().to_string(), json!(ns))
                })
                .collect();
            json!({ "calls": p.calls.load(Ordering::Relaxed), "totalNs": phases })
        };
        json!({ "ADD": one(&self.add), "DEL": one(&self.del), "other": one(&self.other) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn laps_charge_each_phase_its_own_time() {
        let start = Instant::now() - Duration::from_millis(5);
        let mut laps = Laps::starting_at(start);
        laps.lap(Phase::Read);
        std::thread::sleep(Duration::from_millis(2));
        laps.lap(Phase::Veth);
        assert!(laps.spent_ns[Phase::Read as usize] >= 5_000_000);
        assert!(laps.spent_ns[Phase::Veth as usize] >= 2_000_000);
        assert_eq!(laps.spent_ns[Phase::Alloc as usize], 0);
    }

    #[test]
    fn totals_add_up_per_command() {
        let t = CallTimings::default();
        let mut laps = Laps::default();
        laps.spent_ns[Phase::Alloc as usize] = 100;
        t.record(Command::Add, &laps);
        t.record(Command::Add, &laps);
        t.record(Command::Del, &laps);
        let s = t.snapshot();
        assert_eq!(s["ADD"]["calls"], 2);
        assert_eq!(s["ADD"]["totalNs"]["alloc"], 200);
        assert_eq!(s["DEL"]["totalNs"]["alloc"], 100);
        assert_eq!(s["other"]["calls"], 0);
    }
}
