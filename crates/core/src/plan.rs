//! The pool's decisions, pure: state and targets in, one step out.
//!
//! Targets are counted in pod addresses. A /28 prefix is 16 of them and
//! takes one of the ENI's address slots, as a secondary IP does.

use std::time::{Duration, Instant};

use crate::limits::InstanceLimits;

/// Warm-pool targets (aws-node's meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// `WARM_ENI_TARGET` (default 1): keep this many ENIs' worth of free addresses.
    pub warm_eni_target: u32,
    /// `WARM_IP_TARGET`: keep exactly this many free addresses (overrides ENI target).
    pub warm_ip_target: Option<u32>,
    /// `MINIMUM_IP_TARGET`: keep at least this many addresses in the pool.
    pub minimum_ip_target: Option<u32>,
    /// `MAX_ENI`: never attach more ENIs than this (capped by the instance type).
    pub max_eni: Option<u32>,
    /// `IP_COOLDOWN_PERIOD` (seconds, default 30): how long a released
    /// address rests before it is handed out again (unless nothing else is left).
    pub cooldown: Duration,
    /// `ENABLE_PREFIX_DELEGATION` (default false): grow by /28 prefixes.
    pub prefix_delegation: bool,
    /// `WARM_PREFIX_TARGET` (prefix mode; default 1 when neither
    /// `WARM_IP_TARGET` nor `MINIMUM_IP_TARGET` is set).
    pub warm_prefix_target: Option<u32>,
    /// `VPC_CNI_WARM_POLICY` (`fixed`, default, or `adaptive`).
    pub policy: WarmPolicy,
    /// `VPC_CNI_RELEASE_DELAY_S` (default 300): how long a surplus must last
    /// before it is returned to EC2 (the hysteresis in time).
    pub release_delay: Duration,
    /// `VPC_CNI_RECONCILE_INTERVAL_S` (default 3600): mean interval of the
    /// jittered inventory check (DescribeNetworkInterfaces, leak collection).
    pub reconcile_interval: Duration,
    /// `VPC_CNI_LEAK_GRACE_S` (default 600): age beyond which a detached
    /// ENI tagged for this node is deleted.
    pub leak_grace: Duration,
}

/// How the warm pool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WarmPolicy {
    /// aws-node's static targets.
    #[default]
    Fixed,
    /// Sized from the observed pod arrival rate and EC2 latency (README).
    Adaptive,
}

impl Default for PoolSettings {
    /// aws-node's defaults: one warm ENI, secondary IPs, fixed policy.
    fn default() -> Self {
        PoolSettings {
            warm_eni_target: 1,
            warm_ip_target: None,
            minimum_ip_target: None,
            max_eni: None,
            cooldown: Duration::from_secs(30),
            prefix_delegation: false,
            warm_prefix_target: None,
            policy: WarmPolicy::Fixed,
            release_delay: Duration::from_secs(300),
            reconcile_interval: Duration::from_secs(3600),
            leak_grace: Duration::from_secs(600),
        }
    }
}

/// Pod addresses in one delegated /28.
pub const PREFIX_SIZE: u32 = 16;

/// How the pool grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grow {
    /// Secondary /32 addresses.
    Ips,
    /// /28 prefixes.
    Prefixes,
}

/// The limits the pool works within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// ENIs this node may have (instance type, capped by `MAX_ENI`).
    pub max_enis: u32,
    /// Address slots per ENI (secondary IPs or prefixes; the instance
    /// type's IPv4 limit − 1).
    pub ips_per_eni: u32,
    /// The most pod addresses worth holding: in prefix mode the node's
    /// max-pods (kubelet schedules no more), otherwise every slot.
    pub max_addresses: u32,
}

impl Limits {
    /// From the instance type and settings.
    pub fn new(instance: &InstanceLimits, settings: &PoolSettings) -> Self {
        let max_enis = settings
            .max_eni
            .map_or(instance.max_enis, |m| m.min(instance.max_enis));
        let ips_per_eni = instance.ipv4_per_eni.saturating_sub(1);
        let max_addresses = if settings.prefix_delegation {
            let all = max_enis * ips_per_eni * PREFIX_SIZE;
            // Whole prefixes: max-pods rounded up to 16.
            all.min(crate::limits::pd_pod_cap(instance.vcpus).div_ceil(PREFIX_SIZE) * PREFIX_SIZE)
        } else {
            max_enis * ips_per_eni
        };
        Self {
            max_enis,
            ips_per_eni,
            max_addresses,
        }
    }

    /// The most pod addresses this node may hold.
    pub fn capacity(&self) -> u32 {
        self.max_addresses
    }
}

/// One ENI as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EniState {
    /// Device index.
    pub device_index: u32,
    /// Secondary /32s held.
    pub ips: u32,
    /// Prefixes held.
    pub prefixes: u32,
    /// Free (unallocated) /32s that could be returned now.
    pub free_ips: u32,
    /// Prefixes with all 16 addresses free.
    pub free_prefixes: u32,
    /// Whether its link is up (an ENI without one takes no new addresses).
    pub usable: bool,
}

impl EniState {
    fn slots(&self) -> u32 {
        self.ips + self.prefixes
    }

    fn addresses(&self) -> u32 {
        self.ips + self.prefixes * PREFIX_SIZE
    }
}

/// What the pool should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: the pool meets its target or cannot grow.
    Idle,
    /// Assign `count` /32s to the ENI at `device_index`.
    Assign {
        /// The ENI's device index.
        device_index: u32,
        /// How many.
        count: u32,
    },
    /// Delegate `count` /28 prefixes to the ENI at `device_index`.
    AssignPrefixes {
        /// The ENI's device index.
        device_index: u32,
        /// How many.
        count: u32,
    },
    /// Attach a new ENI at `device_index`.
    Attach {
        /// The device index to use.
        device_index: u32,
    },
    /// Return `count` free /32s of the ENI at `device_index`.
    Release {
        /// The ENI's device index.
        device_index: u32,
        /// How many.
        count: u32,
    },
    /// Return one fully free prefix of the ENI at `device_index`.
    ReleasePrefix {
        /// The ENI's device index.
        device_index: u32,
    },
    /// Detach and delete the wholly free secondary ENI at `device_index`.
    DeleteEni {
        /// The ENI's device index.
        device_index: u32,
    },
}

/// What the pool should hold, in pod addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Addresses to hold in total (used + warm), capped by capacity.
    pub total: u32,
    /// How much above `total` a surplus must be before any is returned:
    /// one growth step, so returning never triggers the next growth.
    pub slack: u32,
}

/// aws-node's static targets for `used` addresses in use and `waiting`
/// ADDs blocked on an empty pool.
pub fn fixed_target(settings: &PoolSettings, limits: &Limits, used: u32, waiting: u32) -> Target {
    let demand = used.saturating_add(waiting);
    let ip_targets = settings.warm_ip_target.is_some() || settings.minimum_ip_target.is_some();
    let (want, slack) = if settings.prefix_delegation {
        // aws-node: WARM_IP_TARGET/MINIMUM_IP_TARGET win over
        // WARM_PREFIX_TARGET, and are met with whole prefixes.
        let want = if ip_targets {
            demand.saturating_add(settings.warm_ip_target.unwrap_or(0))
        } else {
            demand.saturating_add(settings.warm_prefix_target.unwrap_or(1) * PREFIX_SIZE)
        };
        (want, PREFIX_SIZE)
    } else if let Some(warm) = settings.warm_ip_target {
        (demand.saturating_add(warm), warm.max(1))
    } else {
        let eni = limits.ips_per_eni;
        (
            demand.saturating_add(settings.warm_eni_target.saturating_mul(eni)),
            eni,
        )
    };
    finish(settings, limits, demand, want, slack)
}

/// Floors and caps shared by every policy.
pub fn finish(
    settings: &PoolSettings,
    limits: &Limits,
    demand: u32,
    want: u32,
    slack: u32,
) -> Target {
    // At least one free address, so an ADD that finds the pool empty always
    // makes it grow (WARM_IP_TARGET=0 would otherwise stall it).
    let total = want
        .max(demand.saturating_add(1))
        .max(settings.minimum_ip_target.unwrap_or(0))
        .min(limits.capacity());
    Target { total, slack }
}

/// Whether a /32 step fills the ENI's whole room (aws-node's ENI mode:
/// WARM_ENI_TARGET without WARM_IP_TARGET, one call per ENI) or takes
/// exactly what is missing (WARM_IP_TARGET, prefix fallback, adaptive).
pub fn whole_eni(settings: &PoolSettings) -> bool {
    !settings.prefix_delegation
        && settings.warm_ip_target.is_none()
        && settings.policy == WarmPolicy::Fixed
}

/// The next growth step towards `target`, or `None` if none is needed or
/// possible. `grow` says whether to use prefixes (prefix mode, not in
/// fallback) or /32s; `fill_eni` whether /32 steps take the ENI's whole room.
pub fn grow_step(
    limits: &Limits,
    enis: &[EniState],
    total: u32,
    target: Target,
    grow: Grow,
    fill_eni: bool,
) -> Option<Step> {
    if total >= target.total {
        return None;
    }
    let missing = target.total - total;
    let room = |e: &EniState| limits.ips_per_eni.saturating_sub(e.slots());
    if let Some(e) = enis.iter().find(|e| e.usable && room(e) > 0) {
        let step = match grow {
            Grow::Prefixes => Step::AssignPrefixes {
                device_index: e.device_index,
                // Everything missing in one call: EC2 takes a count.
                count: missing.div_ceil(PREFIX_SIZE).min(room(e)),
            },
            Grow::Ips => Step::Assign {
                device_index: e.device_index,
                count: if fill_eni {
                    room(e)
                } else {
                    missing.min(room(e))
                },
            },
        };
        return Some(step);
    }
    // Every usable ENI is full; an unusable one waits for its link.
    if enis.iter().any(|e| !e.usable) {
        return None;
    }
    if (enis.len() as u32) < limits.max_enis {
        let device_index = (0..)
            .find(|i| !enis.iter().any(|e| e.device_index == *i))
            .unwrap_or(0);
        return Some(Step::Attach { device_index });
    }
    None
}

/// The next step returning surplus, if the pool holds more than `target`
/// plus its slack. /32s go first (in prefix mode they are the fallback's),
/// then whole prefixes, then a wholly free secondary ENI.
pub fn shrink_step(enis: &[EniState], total: u32, target: Target) -> Option<Step> {
    let surplus = total.checked_sub(target.total.saturating_add(target.slack))?;
    if surplus == 0 {
        return None;
    }
    // A wholly free secondary ENI whose addresses are all surplus: one
    // Detach+Delete instead of many Unassigns.
    if let Some(e) = enis.iter().rev().find(|e| {
        e.device_index > 0
            && e.usable
            && e.free_ips == e.ips
            && e.free_prefixes == e.prefixes
            && e.addresses() <= surplus
    }) {
        return Some(Step::DeleteEni {
            device_index: e.device_index,
        });
    }
    if let Some(e) = enis.iter().rev().find(|e| e.free_ips > 0) {
        return Some(Step::Release {
            device_index: e.device_index,
            count: e.free_ips.min(surplus),
        });
    }
    if surplus >= PREFIX_SIZE {
        if let Some(e) = enis.iter().rev().find(|e| e.free_prefixes > 0) {
            return Some(Step::ReleasePrefix {
                device_index: e.device_index,
            });
        }
    }
    None
}

/// The hysteresis in time: a surplus is returned only once it has lasted
/// `delay` without a break, so a sawtooth shorter than that never costs an
/// EC2 call.
#[derive(Debug, Clone, Default)]
pub struct SurplusTimer {
    since: Option<Instant>,
}

impl SurplusTimer {
    /// Records whether there is a surplus now; returns whether it has lasted
    /// `delay`.
    pub fn observe(&mut self, surplus: bool, now: Instant, delay: Duration) -> bool {
        if !surplus {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now.duration_since(since) >= delay
    }

    /// Starts over (after a release, the next one waits its own delay).
    pub fn reset(&mut self) {
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PoolSettings {
        PoolSettings::default()
    }

    fn m5_large(s: &PoolSettings) -> Limits {
        Limits::new(&crate::limits::lookup("m5.large").expect("known"), s)
    }

    fn eni(device_index: u32, ips: u32, prefixes: u32) -> EniState {
        EniState {
            device_index,
            ips,
            prefixes,
            usable: true,
            ..EniState::default()
        }
    }

    #[test]
    fn cold_node_fills_its_primary_eni_at_once() {
        let s = settings();
        let l = m5_large(&s);
        let t = fixed_target(&s, &l, 0, 0);
        assert_eq!(t.total, 9, "WARM_ENI_TARGET=1: one ENI's worth free");
        assert_eq!(
            grow_step(&l, &[eni(0, 0, 0)], 0, t, Grow::Ips, whole_eni(&s)),
            Some(Step::Assign {
                device_index: 0,
                count: 9
            })
        );
    }

    #[test]
    fn full_eni_with_pods_attaches_the_next() {
        let s = settings();
        let l = m5_large(&s);
        assert_eq!(
            grow_step(
                &l,
                &[eni(0, 9, 0)],
                9,
                fixed_target(&s, &l, 0, 0),
                Grow::Ips,
                whole_eni(&s)
            ),
            None
        );
        assert_eq!(
            grow_step(
                &l,
                &[eni(0, 9, 0)],
                9,
                fixed_target(&s, &l, 3, 0),
                Grow::Ips,
                whole_eni(&s)
            ),
            Some(Step::Attach { device_index: 1 })
        );
    }

    #[test]
    fn warm_ip_target_takes_exactly_what_is_missing() {
        let s = PoolSettings {
            warm_ip_target: Some(2),
            ..settings()
        };
        let l = m5_large(&s);
        assert_eq!(
            grow_step(
                &l,
                &[eni(0, 1, 0)],
                1,
                fixed_target(&s, &l, 1, 0),
                Grow::Ips,
                whole_eni(&s)
            ),
            Some(Step::Assign {
                device_index: 0,
                count: 2
            })
        );
    }

    #[test]
    fn never_beyond_max_eni_or_capacity() {
        let s = PoolSettings {
            max_eni: Some(1),
            ..settings()
        };
        let l = Limits::new(&crate::limits::lookup("t3.medium").unwrap(), &s);
        assert_eq!(l.capacity(), 5);
        let t = fixed_target(&s, &l, 5, 0);
        assert_eq!(t.total, 5);
        assert_eq!(
            grow_step(&l, &[eni(0, 5, 0)], 5, t, Grow::Ips, whole_eni(&s)),
            None
        );
    }

    #[test]
    fn minimum_ip_target_is_a_floor() {
        let s = PoolSettings {
            warm_ip_target: Some(1),
            minimum_ip_target: Some(12),
            ..settings()
        };
        assert_eq!(fixed_target(&s, &m5_large(&s), 0, 0).total, 12);
    }

    #[test]
    fn waiting_adds_count_as_demand() {
        let s = PoolSettings {
            warm_ip_target: Some(1),
            ..settings()
        };
        assert_eq!(fixed_target(&s, &m5_large(&s), 4, 10).total, 15);
    }

    #[test]
    fn prefix_mode_asks_for_everything_missing_in_one_call() {
        let s = PoolSettings {
            prefix_delegation: true,
            ..settings()
        };
        let l = m5_large(&s);
        assert_eq!(l.capacity(), 112, "m5.large: 110 pods, whole prefixes");
        let t = fixed_target(&s, &l, 0, 0);
        assert_eq!(t.total, 16, "WARM_PREFIX_TARGET defaults to one prefix");
        assert_eq!(
            grow_step(&l, &[eni(0, 0, 0)], 0, t, Grow::Prefixes, whole_eni(&s)),
            Some(Step::AssignPrefixes {
                device_index: 0,
                count: 1
            })
        );
        // 30 ADDs waiting on a cold node: 30 + 16 warm → 3 prefixes, one call.
        let t = fixed_target(&s, &l, 0, 30);
        assert_eq!(
            grow_step(&l, &[eni(0, 0, 0)], 0, t, Grow::Prefixes, whole_eni(&s)),
            Some(Step::AssignPrefixes {
                device_index: 0,
                count: 3
            })
        );
        // In fallback the same need is met with /32s.
        assert_eq!(
            grow_step(&l, &[eni(0, 0, 0)], 0, t, Grow::Ips, whole_eni(&s)),
            Some(Step::Assign {
                device_index: 0,
                count: 9
            })
        );
    }

    #[test]
    fn ip_targets_override_warm_prefix_target() {
        let s = PoolSettings {
            prefix_delegation: true,
            warm_prefix_target: Some(4),
            warm_ip_target: Some(5),
            ..settings()
        };
        assert_eq!(fixed_target(&s, &m5_large(&s), 20, 0).total, 25);
    }

    #[test]
    fn an_eni_without_its_link_blocks_attaching_another() {
        let s = settings();
        let l = m5_large(&s);
        let mut e1 = eni(1, 0, 0);
        e1.usable = false;
        assert_eq!(
            grow_step(
                &l,
                &[eni(0, 9, 0), e1],
                9,
                fixed_target(&s, &l, 9, 0),
                Grow::Ips,
                whole_eni(&s)
            ),
            None
        );
    }

    /// Grows from nothing with `used` addresses in use until the planner
    /// is satisfied; returns the addresses held and the ENIs used.
    fn settle(s: &PoolSettings, used: u32) -> (u32, usize) {
        let l = m5_large(s);
        let mut enis = vec![eni(0, 0, 0)];
        let mut total = 0;
        let t = fixed_target(s, &l, used, 0);
        while let Some(step) = grow_step(
            &l,
            &enis,
            total,
            t,
            if s.prefix_delegation {
                Grow::Prefixes
            } else {
                Grow::Ips
            },
            whole_eni(s),
        ) {
            match step {
                Step::Assign {
                    device_index,
                    count,
                } => {
                    enis[device_index as usize].ips += count;
                    total += count;
                }
                Step::AssignPrefixes {
                    device_index,
                    count,
                } => {
                    enis[device_index as usize].prefixes += count;
                    total += count * PREFIX_SIZE;
                }
                Step::Attach { device_index } => enis.push(eni(device_index, 0, 0)),
                other => panic!("{other:?}"),
            }
        }
        (total, enis.len())
    }

    /// The README's worked examples (m5.large: 3 ENIs, 9 secondary
    /// addresses or /28 prefixes each, max-pods 29 or 110).
    #[test]
    fn readme_examples_on_an_m5_large() {
        let d = settings();
        let pd = PoolSettings {
            prefix_delegation: true,
            ..d
        };
        let cases: &[(&str, PoolSettings, [u32; 4])] = &[
            ("defaults", d, [9, 18, 27, 27]),
            (
                "WARM_IP_TARGET=5",
                PoolSettings {
                    warm_ip_target: Some(5),
                    ..d
                },
                [5, 10, 15, 25],
            ),
            (
                "WARM_IP_TARGET=5 MINIMUM_IP_TARGET=15",
                PoolSettings {
                    warm_ip_target: Some(5),
                    minimum_ip_target: Some(15),
                    ..d
                },
                [15, 15, 15, 25],
            ),
            (
                "WARM_ENI_TARGET=2",
                PoolSettings {
                    warm_eni_target: 2,
                    ..d
                },
                [18, 27, 27, 27],
            ),
            (
                "MAX_ENI=1",
                PoolSettings {
                    max_eni: Some(1),
                    ..d
                },
                [9, 9, 9, 9],
            ),
            ("PD", pd, [16, 32, 32, 48]),
            (
                "PD WARM_PREFIX_TARGET=2",
                PoolSettings {
                    warm_prefix_target: Some(2),
                    ..pd
                },
                [32, 48, 48, 64],
            ),
            (
                "PD WARM_IP_TARGET=5",
                PoolSettings {
                    warm_ip_target: Some(5),
                    ..pd
                },
                [16, 16, 16, 32],
            ),
            (
                "PD WARM_IP_TARGET=2 MINIMUM_IP_TARGET=30",
                PoolSettings {
                    warm_ip_target: Some(2),
                    minimum_ip_target: Some(30),
                    ..pd
                },
                [32, 32, 32, 32],
            ),
        ];
        for (name, s, want) in cases {
            let got: Vec<u32> = [0, 5, 10, 20]
                .iter()
                .map(|&u| settle(s, u.min(m5_large(s).capacity())).0)
                .collect();
            assert_eq!(got, want.to_vec(), "{name}");
        }
        assert_eq!(settle(&d, 5).1, 2, "defaults, 5 pods: a second ENI");
        assert_eq!(settle(&pd, 20).1, 1, "prefixes: all on the primary ENI");
    }

    #[test]
    fn surplus_within_slack_is_kept() {
        let t = Target {
            total: 16,
            slack: 16,
        };
        let mut e = eni(0, 0, 2);
        e.free_prefixes = 2;
        assert_eq!(shrink_step(&[e.clone()], 32, t), None);
        e.prefixes = 3;
        e.free_prefixes = 3;
        assert_eq!(
            shrink_step(&[e], 48, t),
            Some(Step::ReleasePrefix { device_index: 0 })
        );
    }

    #[test]
    fn fallback_ips_go_before_prefixes_and_whole_enis_in_one_call() {
        let t = Target {
            total: 16,
            slack: 16,
        };
        let mut e0 = eni(0, 3, 3);
        e0.free_ips = 3;
        e0.free_prefixes = 1;
        assert_eq!(
            shrink_step(&[e0.clone()], 51, t),
            Some(Step::Release {
                device_index: 0,
                count: 3
            })
        );
        let mut e1 = eni(1, 9, 0);
        e1.free_ips = 9;
        let t = Target { total: 9, slack: 9 };
        let e0 = eni(0, 9, 0);
        assert_eq!(
            shrink_step(&[e0, e1], 27, t),
            Some(Step::DeleteEni { device_index: 1 })
        );
    }

    #[test]
    fn surplus_must_last_the_delay_without_a_break() {
        let d = Duration::from_secs(60);
        let mut timer = SurplusTimer::default();
        let t0 = Instant::now();
        assert!(!timer.observe(true, t0, d));
        assert!(!timer.observe(true, t0 + Duration::from_secs(59), d));
        // A sawtooth: the surplus dips away before the delay is up.
        assert!(!timer.observe(false, t0 + Duration::from_secs(59), d));
        assert!(!timer.observe(true, t0 + Duration::from_secs(61), d));
        assert!(!timer.observe(true, t0 + Duration::from_secs(120), d));
        assert!(timer.observe(true, t0 + Duration::from_secs(121), d));
    }
}
