//! How the simulated account behaves, besides its books: API latencies,
//! EC2's per-account token buckets, injected failures, and call counters.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::bucket::{BucketSpec, TokenBucket};
use crate::CloudError;

/// An EC2 API action the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// `DescribeNetworkInterfaces` (filtered).
    Describe,
    /// `AssignPrivateIpAddresses` (addresses or `Ipv4PrefixCount`).
    Assign,
    /// `UnassignPrivateIpAddresses` (addresses or prefixes).
    Unassign,
    /// `CreateNetworkInterface`.
    Create,
    /// `AttachNetworkInterface`.
    Attach,
    /// `DetachNetworkInterface`.
    Detach,
    /// `DeleteNetworkInterface`.
    Delete,
}

impl Action {
    /// Every action, in a fixed order (indexes of per-action arrays).
    pub const ALL: [Action; 7] = [
        Action::Describe,
        Action::Assign,
        Action::Unassign,
        Action::Create,
        Action::Attach,
        Action::Detach,
        Action::Delete,
    ];

    /// EC2's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Describe => "DescribeNetworkInterfaces",
            Action::Assign => "AssignPrivateIpAddresses",
            Action::Unassign => "UnassignPrivateIpAddresses",
            Action::Create => "CreateNetworkInterface",
            Action::Attach => "AttachNetworkInterface",
            Action::Detach => "DetachNetworkInterface",
            Action::Delete => "DeleteNetworkInterface",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The token bucket each action draws from. EC2's published per-account
/// defaults: Assign, Unassign, Create and Delete have buckets of their own
/// (100 tokens, 5/s); Attach and Detach share the "other mutating actions"
/// bucket (50, 5/s); filtered describes have 100 at 20/s.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountLimits {
    /// Per action: the bucket's index in `buckets`.
    pub bucket_of: [usize; 7],
    /// The buckets.
    pub buckets: Vec<BucketSpec>,
}

impl AccountLimits {
    /// EC2's published defaults.
    pub fn ec2() -> Self {
        // 0 describe, 1 assign, 2 unassign, 3 create, 4 other mutating, 5 delete
        AccountLimits {
            bucket_of: [0, 1, 2, 3, 4, 4, 5],
            buckets: vec![
                BucketSpec::new(100.0, 20.0),
                BucketSpec::new(100.0, 5.0),
                BucketSpec::new(100.0, 5.0),
                BucketSpec::new(100.0, 5.0),
                BucketSpec::new(50.0, 5.0),
                BucketSpec::new(100.0, 5.0),
            ],
        }
    }
}

/// How long each action takes to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// Describe.
    pub describe: Duration,
    /// Assign (addresses or prefixes).
    pub assign: Duration,
    /// Unassign.
    pub unassign: Duration,
    /// CreateNetworkInterface.
    pub create: Duration,
    /// AttachNetworkInterface (the call itself).
    pub attach: Duration,
    /// DetachNetworkInterface until the ENI is `available`.
    pub detach: Duration,
    /// DeleteNetworkInterface.
    pub delete: Duration,
    /// After Attach answers, until the ENI is usable on the node (EC2:
    /// "up to 10 s"); `attach_eni` returns only then.
    pub eni_ready: Duration,
    /// How long new addresses stay invisible to the node's inventory
    /// (`enis`), as IMDS lags EC2 by about a second.
    pub imds_lag: Duration,
    /// How long a throttled or failed call takes to answer.
    pub reject: Duration,
}

impl Latencies {
    /// Every call takes `d`; no extra ENI or IMDS delay.
    pub fn uniform(d: Duration) -> Self {
        Latencies {
            describe: d,
            assign: d,
            unassign: d,
            create: d,
            attach: d,
            detach: d,
            delete: d,
            eni_ready: Duration::ZERO,
            imds_lag: Duration::ZERO,
            reject: d,
        }
    }

    /// Measured EC2 behaviour: an Assign ≈ 0.5 s, a new ENI usable a few
    /// seconds after Attach (EC2 says up to 10 s; we take 5 s as typical),
    /// IMDS lagging by ≈ 1 s.
    pub fn ec2() -> Self {
        Latencies {
            describe: Duration::from_millis(200),
            assign: Duration::from_millis(500),
            unassign: Duration::from_millis(300),
            create: Duration::from_millis(500),
            attach: Duration::from_millis(500),
            detach: Duration::from_secs(2),
            delete: Duration::from_millis(300),
            eni_ready: Duration::from_secs(5),
            imds_lag: Duration::from_secs(1),
            reject: Duration::from_millis(50),
        }
    }

    /// The latency of `action`.
    pub fn of(&self, action: Action) -> Duration {
        match action {
            Action::Describe => self.describe,
            Action::Assign => self.assign,
            Action::Unassign => self.unassign,
            Action::Create => self.create,
            Action::Attach => self.attach,
            Action::Detach => self.detach,
            Action::Delete => self.delete,
        }
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::uniform(Duration::ZERO)
    }
}

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A 5xx (`InternalError`/`Unavailable`): nothing changed.
    ServerError,
    /// No answer within `timeout`: nothing changed.
    Timeout,
    /// `RequestLimitExceeded` regardless of the buckets.
    Throttle,
}

/// Random failures, for the scale simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRates {
    /// Share of calls answered with a 5xx.
    pub server_error: f64,
    /// Share of calls that time out.
    pub timeout: f64,
    /// How long a timing-out call hangs.
    pub timeout_after: Duration,
}

impl Default for FaultRates {
    fn default() -> Self {
        FaultRates {
            server_error: 0.0,
            timeout: 0.0,
            timeout_after: Duration::from_secs(10),
        }
    }
}

/// Everything about the account besides its books.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Latencies.
    pub latencies: Latencies,
    /// Per-account throttling; `None` never throttles.
    pub limits: Option<AccountLimits>,
    /// Random failures.
    pub faults: FaultRates,
    /// Seed of the fault dice (runs are reproducible).
    pub seed: u64,
}

impl Default for Behaviour {
    /// Instant answers, EC2's buckets, no random failures.
    fn default() -> Self {
        Behaviour {
            latencies: Latencies::default(),
            limits: Some(AccountLimits::ec2()),
            faults: FaultRates::default(),
            seed: 0x5eed,
        }
    }
}

/// Calls seen by the account, per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionStats {
    /// Every call that arrived.
    pub calls: u64,
    /// Answered `RequestLimitExceeded`.
    pub throttled: u64,
    /// Answered with a 5xx or timed out.
    pub failed: u64,
}

/// The account's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Per action, indexed like [`Action::ALL`].
    pub by_action: [ActionStats; 7],
}

impl SimStats {
    /// The counters of `action`.
    pub fn of(&self, action: Action) -> ActionStats {
        self.by_action[action.index()]
    }

    /// All calls that arrived.
    pub fn calls(&self) -> u64 {
        self.by_action.iter().map(|s| s.calls).sum()
    }

    /// All throttled answers.
    pub fn throttled(&self) -> u64 {
        self.by_action.iter().map(|s| s.throttled).sum()
    }
}

/// The live state behind [`Behaviour`].
#[derive(Debug)]
pub(super) struct Gate {
    behaviour: Behaviour,
    buckets: Vec<TokenBucket>,
    rng: StdRng,
    scripted: VecDeque<(Action, Fault)>,
    stats: SimStats,
}

/// What the gate decided for one call.
pub(super) enum Verdict {
    /// Go ahead after the latency.
    Proceed(Duration),
    /// Fail after `after` with this error.
    Fail(Duration, CloudError),
}

impl Gate {
    pub(super) fn new(behaviour: Behaviour) -> Self {
        let buckets = behaviour
            .limits
            .as_ref()
            .map(|l| l.buckets.iter().map(|s| TokenBucket::new(*s)).collect())
            .unwrap_or_default();
        Gate {
            rng: StdRng::seed_from_u64(behaviour.seed),
            behaviour,
            buckets,
            scripted: VecDeque::new(),
            stats: SimStats::default(),
        }
    }

    pub(super) fn latencies(&self) -> &Latencies {
        &self.behaviour.latencies
    }

    pub(super) fn set_latencies(&mut self, latencies: Latencies) {
        self.behaviour.latencies = latencies;
    }

    pub(super) fn inject(&mut self, action: Action, fault: Fault) {
        self.scripted.push_back((action, fault));
    }

    pub(super) fn stats(&self) -> SimStats {
        self.stats.clone()
    }

    /// Admits or rejects one call of `action` arriving now.
    pub(super) fn admit(&mut self, action: Action) -> Verdict {
        let op = action.name();
        let lat = self.behaviour.latencies;
        let stats = &mut self.stats.by_action[action.index()];
        stats.calls += 1;
        let scripted = self
            .scripted
            .iter()
            .position(|(a, _)| *a == action)
            .and_then(|i| self.scripted.remove(i))
            .map(|(_, f)| f);
        let fault = scripted.or_else(|| {
            let f = self.behaviour.faults;
            let roll: f64 = if f.server_error > 0.0 || f.timeout > 0.0 {
                self.rng.random()
            } else {
                1.0
            };
            if roll < f.server_error {
                Some(Fault::ServerError)
            } else if roll < f.server_error + f.timeout {
                Some(Fault::Timeout)
            } else {
                None
            }
        });
        let throttle = |stats: &mut ActionStats| {
            stats.throttled += 1;
            Verdict::Fail(lat.reject, CloudError::Throttled { operation: op })
        };
        match fault {
            Some(Fault::Throttle) => return throttle(stats),
            Some(Fault::ServerError) => {
                stats.failed += 1;
                return Verdict::Fail(
                    lat.reject,
                    CloudError::Api {
                        operation: op,
                        message: "InternalError: an internal error has occurred (simulated 5xx)"
                            .into(),
                    },
                );
            }
            Some(Fault::Timeout) => {
                stats.failed += 1;
                return Verdict::Fail(
                    self.behaviour.faults.timeout_after,
                    CloudError::Timeout { operation: op },
                );
            }
            None => {}
        }
        if let Some(limits) = &self.behaviour.limits {
            let bucket = &mut self.buckets[limits.bucket_of[action.index()]];
            if !bucket.try_take(Instant::now()) {
                return throttle(stats);
            }
        }
        Verdict::Proceed(lat.of(action))
    }
}
