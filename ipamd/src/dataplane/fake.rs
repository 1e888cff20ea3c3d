//! [`FakeDataplane`]: the kernel as a few maps, for unit tests of the pod
//! service, the reaper and reconcile without root.
//!
//! It keeps what [`NetlinkDataplane`](super::NetlinkDataplane) would leave in
//! the kernel — veth pairs (host end, and the pod end with its address,
//! routes and neighbour), /32 host routes, `ip rule`s — with the kernel's
//! rules of thumb: deleting a veth deletes its peer and the routes through
//! it, rules outlive links, a batch attempts every message even when one
//! fails. Like youki's fake `Syscall`, it records every call with typed
//! arguments ([`Call`]) and fails on demand ([`FakeDataplane::fail_at`],
//! [`FakeDataplane::fail_after`]), at one [`Step`] of the real sequence.
//!
//! Where a step fails part-way, the fake does what the real batch does:
//! the host side's routes and the rule to the pod are in, the rule from the
//! pod is not; DEL's rules are gone, its route is not. [`add_pod`]'s own
//! clean-up after a failure mirrors the real one, and
//! [`FakeDataplane::fail_undo`] makes it fail as a real one can (the real
//! code ignores those errors), leaving its pieces behind.
//!
//! [`add_pod`]: Dataplane::add_pod

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netns::NetnsError;
use super::nl::NlError;
use super::{msg, Dataplane, DataplaneError, PodNet, Result, VethMacs, Wired};
use super::{FROM_POD_RULE_PRIORITY, TO_POD_RULE_PRIORITY};
use crate::cloud::MacAddr;
use crate::timing::{Laps, Phase};

/// A point where a call can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// ADD: opening the pod's namespace (fails as a namespace that is gone).
    Netns,
    /// ADD: creating the veth pair. Nothing is made.
    Veth,
    /// ADD: the pod side batch. The pod end's link is up and has its address,
    /// but no routes; then the veth is removed again.
    PodSide,
    /// ADD: the host side batch. The link is up with its alias, the /32 route
    /// and the rule to the pod are in, the rule from the pod is not; then the
    /// host side and the veth are removed again.
    HostSide,
    /// `del_pod`: the rules are removed, the route is not.
    DelPod,
    /// `reap_link`: nothing is removed.
    ReapLink,
    /// `check_pod`.
    Check,
    /// `dump_node`.
    Dump,
    /// `pod_link_mac`.
    PodLinkMac,
}

/// One call, with what it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`Dataplane::add_pod`].
    AddPod(PodNet),
    /// [`Dataplane::del_pod`].
    DelPod {
        /// The pod's address.
        addr: Ipv4Addr,
        /// Its ENI's route table.
        eni_table: Option<u32>,
        /// Its host veth's index (0: any).
        host_ifindex: u32,
    },
    /// [`Dataplane::reap_link`].
    ReapLink {
        /// Link index.
        index: u32,
        /// Expected name.
        name: String,
    },
    /// [`Dataplane::check_pod`].
    CheckPod(PodNet),
    /// [`Dataplane::dump_node`].
    DumpNode(String),
    /// [`Dataplane::pod_link_mac`].
    PodLinkMac {
        /// Namespace path.
        netns: String,
        /// Interface inside it.
        ifname: String,
    },
}

/// The pod end of a veth pair, inside the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEnd {
    /// Namespace path.
    pub netns: String,
    /// Interface name (`eth0`).
    pub ifname: String,
    /// Index inside the namespace.
    pub index: u32,
    /// MAC.
    pub mac: MacAddr,
    /// Set up.
    pub up: bool,
    /// `ip addr`: the pod's /32.
    pub addr: Option<Ipv4Addr>,
    /// The route to 169.254.1.1 and the default route via it.
    pub routes: bool,
    /// The gateway's permanent neighbour entry, with the host end's MAC.
    pub neigh: Option<MacAddr>,
}

/// A veth pair, seen from the node namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    /// Host end's index.
    pub index: u32,
    /// Host end's name (`eni…`).
    pub name: String,
    /// Host end's MAC.
    pub mac: MacAddr,
    /// Host end's MTU.
    pub mtu: u32,
    /// Host end set up.
    pub up: bool,
    /// Host end's alias.
    pub alias: Option<String>,
    /// The other end.
    pub pod: PodEnd,
}

/// An `ip rule` of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    /// `from <addr>` (else `to <addr>`).
    pub from: bool,
    /// The pod's address.
    pub addr: Ipv4Addr,
    /// `lookup <table>`.
    pub table: u32,
    /// `priority`.
    pub priority: u32,
}

/// Everything the fake holds that concerns one pod address or host veth
/// name: what a rollback must leave empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Veths with that host name, or whose pod end has that address.
    pub veths: Vec<Veth>,
    /// Host /32 routes to that address (their output link).
    pub routes: Vec<u32>,
    /// Rules naming that address.
    pub rules: Vec<Rule>,
}

impl Leftovers {
    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.veths.is_empty() && self.routes.is_empty() && self.rules.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    /// Calls to let through before failing.
    passes: usize,
    /// Failures still to inject.
    times: usize,
}

#[derive(Debug, Default)]
struct State {
    next_index: u32,
    /// Host veths by host index.
    veths: BTreeMap<u32, Veth>,
    /// Main-table /32 host routes: destination → output link.
    routes: BTreeMap<Ipv4Addr, u32>,
    rules: BTreeSet<Rule>,
    failures: HashMap<Step, Failure>,
    undo_fails: bool,
    calls: Vec<Call>,
}

impl State {
    /// Whether this call of `step` fails (and counts it).
    fn hit(&mut self, step: Step) -> bool {
        let Some(f) = self.failures.get_mut(&step) else {
            return false;
        };
        if f.passes > 0 {
            f.passes -= 1;
            return false;
        }
        f.times -= 1;
        if f.times == 0 {
            self.failures.remove(&step);
        }
        true
    }

    /// A new veth pair for `pod`, its pod end configured (up, address,
    /// routes, neighbour) or not, no host side; returns its host index.
    fn new_veth(&mut self, pod: &PodNet, macs: VethMacs, pod_side: bool) -> u32 {
        let index = self.index();
        let pod_index = self.index();
        self.veths.insert(
            index,
            Veth {
                index,
                name: pod.host_ifname.clone(),
                mac: macs.host,
                mtu: pod.mtu,
                up: false,
                alias: None,
                pod: PodEnd {
                    netns: pod.netns.clone(),
                    ifname: pod.ifname.clone(),
                    index: pod_index,
                    mac: macs.pod,
                    up: pod_side,
                    addr: pod_side.then_some(pod.addr),
                    routes: pod_side,
                    neigh: pod_side.then_some(macs.host),
                },
            },
        );
        index
    }

    fn index(&mut self) -> u32 {
        self.next_index += 1;
        self.next_index
    }

    /// `ip link del`: the pair, and every route through the host end.
    fn del_link(&mut self, index: u32) -> bool {
        self.routes.retain(|_, oif| *oif != index);
        self.veths.remove(&index).is_some()
    }

    fn del_host_side(&mut self, addr: Ipv4Addr, eni_table: Option<u32>, oif: Option<u32>) {
        if self
            .routes
            .get(&addr)
            .is_some_and(|o| oif.is_none_or(|i| i == *o))
        {
            self.routes.remove(&addr);
        }
        self.rules.retain(|r| {
            let to = !r.from && r.table == msg::MAIN_TABLE && r.priority == TO_POD_RULE_PRIORITY;
            let from = r.from && Some(r.table) == eni_table && r.priority == FROM_POD_RULE_PRIORITY;
            !(r.addr == addr && (to || from))
        });
    }
}

/// The error a failing [`Step`] returns: a namespace that is gone for
/// [`Step::Netns`], else a kernel refusal (EIO) naming the step.
fn injected(step: Step, pod: Option<&PodNet>) -> DataplaneError {
    match (step, pod) {
        (Step::Netns, Some(p)) => DataplaneError::Netns(NetnsError::Gone {
            path: p.netns.clone(),
        }),
        _ => DataplaneError::Netlink(NlError::Kernel {
            op: format!("injected failure at {step:?}"),
            source: io::Error::from_raw_os_error(libc::EIO),
        }),
    }
}

/// The fake. Share it as `Arc<FakeDataplane>`; hand a clone to the code
/// under test as `Arc<dyn Dataplane>`.
#[derive(Debug, Default)]
pub struct FakeDataplane {
    state: Mutex<State>,
}

impl FakeDataplane {
    /// Empty: no veths, routes or rules.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake dataplane poisoned")
    }

    /// The next call that reaches `step` fails (once).
    pub fn fail_at(&self, step: Step) {
        self.fail_after(step, 0);
    }

    /// `passes` calls reach `step` and go through; the one after fails
    /// (once).
    pub fn fail_after(&self, step: Step, passes: usize) {
        self.state()
            .failures
            .insert(step, Failure { passes, times: 1 });
    }

    /// No failure is pending any more.
    pub fn heal(&self) {
        let mut st = self.state();
        st.failures.clear();
        st.undo_fails = false;
    }

    /// Whether `add_pod`'s clean-up after a failure fails too (leaving what
    /// it made, as the real one does when its undo requests are refused).
    pub fn fail_undo(&self, fails: bool) {
        self.state().undo_fails = fails;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Every veth pair.
    pub fn veths(&self) -> Vec<Veth> {
        self.state().veths.values().cloned().collect()
    }

    /// The veth whose host end is named `name`.
    pub fn veth_named(&self, name: &str) -> Option<Veth> {
        self.state()
            .veths
            .values()
            .find(|v| v.name == name)
            .cloned()
    }

    /// Every main-table /32 host route: destination → output link.
    pub fn routes(&self) -> BTreeMap<Ipv4Addr, u32> {
        self.state().routes.clone()
    }

    /// Every rule.
    pub fn rules(&self) -> Vec<Rule> {
        self.state().rules.iter().copied().collect()
    }

    /// What is left of the pod with address `addr` or host veth `host_name`.
    pub fn leftovers(&self, addr: Ipv4Addr, host_name: &str) -> Leftovers {
        let st = self.state();
        Leftovers {
            veths: st
                .veths
                .values()
                .filter(|v| v.name == host_name || v.pod.addr == Some(addr))
                .cloned()
                .collect(),
            routes: st.routes.get(&addr).copied().into_iter().collect(),
            rules: st
                .rules
                .iter()
                .filter(|r| r.addr == addr)
                .copied()
                .collect(),
        }
    }

    /// Nothing at all is left.
    pub fn is_empty(&self) -> bool {
        let st = self.state();
        st.veths.is_empty() && st.routes.is_empty() && st.rules.is_empty()
    }

    /// The runtime destroys the namespace at `netns`: every veth with an end
    /// in it goes, with the routes through it.
    pub fn destroy_netns(&self, netns: &str) {
        let mut st = self.state();
        let gone: Vec<u32> = st
            .veths
            .values()
            .filter(|v| v.pod.netns == netns)
            .map(|v| v.index)
            .collect();
        for index in gone {
            st.del_link(index);
        }
    }

    /// Puts a veth in place as a half-done ADD (or an earlier run) left it:
    /// the pair, with its pod end configured or not, no host side. Returns
    /// its host index.
    pub fn insert_veth(&self, pod: &PodNet, macs: VethMacs, pod_side: bool) -> u32 {
        self.state().new_veth(pod, macs, pod_side)
    }

    /// Adds a host route `addr/32 dev <index>` (main table).
    pub fn insert_route(&self, addr: Ipv4Addr, index: u32) {
        self.state().routes.insert(addr, index);
    }

    /// Adds a rule.
    pub fn insert_rule(&self, rule: Rule) {
        self.state().rules.insert(rule);
    }
}

impl Dataplane for FakeDataplane {
    fn add_pod(&self, pod: &PodNet, macs: VethMacs, laps: &mut Laps) -> Result<Wired> {
        let mut st = self.state();
        st.calls.push(Call::AddPod(pod.clone()));
        if st.hit(Step::Netns) {
            return Err(injected(Step::Netns, Some(pod)));
        }
        if st.hit(Step::Veth) {
            return Err(injected(Step::Veth, Some(pod)));
        }
        // A stale host veth of the same name (an earlier sandbox of the
        // pod) is replaced.
        if let Some(stale) = st.veths.values().find(|v| v.name == pod.host_ifname) {
            let index = stale.index;
            st.del_link(index);
        }
        let index = st.new_veth(pod, macs, false);
        let pod_index = st.veths[&index].pod.index;
        laps.lap(Phase::Veth);
        let undo_fails = st.undo_fails;
        let failed = st.hit(Step::PodSide);
        {
            let end = &mut st.veths.get_mut(&index).expect("just made").pod;
            end.up = true;
            end.addr = Some(pod.addr);
            if !failed {
                end.routes = true;
                end.neigh = Some(macs.host);
            }
        }
        if failed {
            if !undo_fails {
                st.del_link(index);
            }
            return Err(injected(Step::PodSide, Some(pod)));
        }
        laps.lap(Phase::PodSide);
        let failed = st.hit(Step::HostSide);
        {
            let host = st.veths.get_mut(&index).expect("just made");
            host.up = true;
            host.alias.clone_from(&pod.alias);
        }
        st.routes.insert(pod.addr, index);
        st.rules.insert(Rule {
            from: false,
            addr: pod.addr,
            table: msg::MAIN_TABLE,
            priority: TO_POD_RULE_PRIORITY,
        });
        if let (Some(table), false) = (pod.eni_table, failed) {
            st.rules.insert(Rule {
                from: true,
                addr: pod.addr,
                table,
                priority: FROM_POD_RULE_PRIORITY,
            });
        }
        if failed {
            if !undo_fails {
                st.del_host_side(pod.addr, pod.eni_table, Some(index));
                st.del_link(index);
            }
            return Err(injected(Step::HostSide, Some(pod)));
        }
        laps.lap(Phase::HostSide);
        Ok(Wired {
            host_ifindex: index,
            pod_ifindex: pod_index,
        })
    }

    fn del_pod(&self, addr: Ipv4Addr, eni_table: Option<u32>, host_ifindex: u32) -> Result<()> {
        let mut st = self.state();
        st.calls.push(Call::DelPod {
            addr,
            eni_table,
            host_ifindex,
        });
        let oif = (host_ifindex != 0).then_some(host_ifindex);
        if st.hit(Step::DelPod) {
            // The batch attempts every message: the rules go, the route
            // (whose delete failed) stays.
            let route = st.routes.get(&addr).copied();
            st.del_host_side(addr, eni_table, oif);
            if let Some(o) = route {
                st.routes.insert(addr, o);
            }
            return Err(injected(Step::DelPod, None));
        }
        st.del_host_side(addr, eni_table, oif);
        Ok(())
    }

    fn reap_link(&self, index: u32, name: &str) -> Result<bool> {
        let mut st = self.state();
        st.calls.push(Call::ReapLink {
            index,
            name: name.to_string(),
        });
        if st.hit(Step::ReapLink) {
            return Err(injected(Step::ReapLink, None));
        }
        if st.veths.get(&index).is_none_or(|v| v.name != name) {
            return Ok(false);
        }
        Ok(st.del_link(index))
    }

    fn check_pod(&self, pod: &PodNet) -> Result<()> {
        let mut st = self.state();
        st.calls.push(Call::CheckPod(pod.clone()));
        if st.hit(Step::Check) {
            return Err(injected(Step::Check, Some(pod)));
        }
        let mismatch = |m: String| Err(DataplaneError::Mismatch(m));
        let Some(end) = st
            .veths
            .values()
            .map(|v| &v.pod)
            .find(|e| e.netns == pod.netns && e.ifname == pod.ifname)
        else {
            return mismatch(format!(
                "interface {} is missing in {}",
                pod.ifname, pod.netns
            ));
        };
        if end.addr != Some(pod.addr) {
            return mismatch(format!(
                "address {}/32 is missing on {}",
                pod.addr, pod.ifname
            ));
        }
        if !end.routes {
            return mismatch(format!(
                "default route via {} dev {} is missing in the pod",
                super::POD_GATEWAY,
                pod.ifname
            ));
        }
        let Some(host) = st.veths.values().find(|v| v.name == pod.host_ifname) else {
            return mismatch(format!("host veth {} is missing", pod.host_ifname));
        };
        if st.routes.get(&pod.addr) != Some(&host.index) {
            return mismatch(format!(
                "host route {}/32 dev {} is missing",
                pod.addr, pod.host_ifname
            ));
        }
        Ok(())
    }

    /// Answers link dumps (host veths, as `veth` links with name, MAC and
    /// alias) and route dumps (the /32 host routes, main table); other
    /// dumps are empty.
    fn dump_node(&self, m: RouteNetlinkMessage, op: &str) -> Result<Vec<RouteNetlinkMessage>> {
        let mut st = self.state();
        st.calls.push(Call::DumpNode(op.to_string()));
        if st.hit(Step::Dump) {
            return Err(injected(Step::Dump, None));
        }
        Ok(match m {
            RouteNetlinkMessage::GetLink(_) => st
                .veths
                .values()
                .map(|v| {
                    let mut l = LinkMessage::default();
                    l.header.index = v.index;
                    l.attributes.push(LinkAttribute::IfName(v.name.clone()));
                    l.attributes.push(LinkAttribute::Address(v.mac.0.to_vec()));
                    if let Some(a) = &v.alias {
                        l.attributes.push(LinkAttribute::IfAlias(a.clone()));
                    }
                    l.attributes
                        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                            InfoKind::Veth,
                        )]));
                    RouteNetlinkMessage::NewLink(l)
                })
                .collect(),
            RouteNetlinkMessage::GetRoute(_) => st
                .routes
                .iter()
                .map(|(dst, oif)| {
                    let mut r = RouteMessage::default();
                    r.header.address_family = AddressFamily::Inet;
                    r.header.destination_prefix_length = 32;
                    r.header.table = msg::MAIN_TABLE as u8;
                    r.attributes
                        .push(RouteAttribute::Destination(RouteAddress::Inet(*dst)));
                    r.attributes.push(RouteAttribute::Oif(*oif));
                    RouteNetlinkMessage::NewRoute(r)
                })
                .collect(),
            _ => Vec::new(),
        })
    }

    fn pod_link_mac(&self, netns: &str, ifname: &str) -> Result<Option<MacAddr>> {
        let mut st = self.state();
        st.calls.push(Call::PodLinkMac {
            netns: netns.to_string(),
            ifname: ifname.to_string(),
        });
        if st.hit(Step::PodLinkMac) {
            return Err(injected(Step::PodLinkMac, None));
        }
        Ok(st
            .veths
            .values()
            .find(|v| v.pod.netns == netns && v.pod.ifname == ifname)
            .map(|v| v.pod.mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::naming;

    fn pod(addr: Ipv4Addr, table: Option<u32>) -> PodNet {
        PodNet {
            netns: "/run/netns/p".into(),
            ifname: "eth0".into(),
            host_ifname: naming::host_veth_name(Some("default"), Some("p"), "c", "eth0"),
            addr,
            mtu: 9001,
            eni_table: table,
            alias: Some("vpc-cni/1 1 9001 eth0 c /run/netns/p".into()),
        }
    }

    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

    #[test]
    fn add_then_del_and_reap_leaves_nothing() {
        let dp = FakeDataplane::new();
        let p = pod(ADDR, Some(2));
        let w = dp
            .add_pod(&p, VethMacs::random(), &mut Laps::default())
            .unwrap();
        dp.check_pod(&p).unwrap();
        let left = dp.leftovers(ADDR, &p.host_ifname);
        assert_eq!(left.veths.len(), 1);
        assert_eq!(left.routes, vec![w.host_ifindex]);
        assert_eq!(left.rules.len(), 2, "to and from the pod");
        dp.del_pod(ADDR, Some(2), w.host_ifindex).unwrap();
        assert!(dp.check_pod(&p).is_err(), "no host route");
        assert!(dp.reap_link(w.host_ifindex, &p.host_ifname).unwrap());
        assert!(dp.is_empty(), "{:?}", dp.leftovers(ADDR, &p.host_ifname));
    }

    #[test]
    fn each_add_step_fails_and_cleans_up_unless_told_not_to() {
        for step in [Step::Netns, Step::Veth, Step::PodSide, Step::HostSide] {
            let dp = FakeDataplane::new();
            dp.fail_at(step);
            let p = pod(ADDR, Some(2));
            assert!(dp
                .add_pod(&p, VethMacs::random(), &mut Laps::default())
                .is_err());
            assert!(dp.is_empty(), "{step:?}");
            // Once only.
            dp.add_pod(&p, VethMacs::random(), &mut Laps::default())
                .unwrap();
        }
        let dp = FakeDataplane::new();
        dp.fail_at(Step::HostSide);
        dp.fail_undo(true);
        let p = pod(ADDR, Some(2));
        assert!(dp
            .add_pod(&p, VethMacs::random(), &mut Laps::default())
            .is_err());
        let left = dp.leftovers(ADDR, &p.host_ifname);
        assert_eq!(
            (left.veths.len(), left.routes.len(), left.rules.len()),
            (1, 1, 1)
        );
    }

    #[test]
    fn fail_after_lets_calls_through_first() {
        let dp = FakeDataplane::new();
        dp.fail_after(Step::DelPod, 1);
        assert!(dp.del_pod(ADDR, None, 0).is_ok());
        assert!(dp.del_pod(ADDR, None, 0).is_err());
        assert!(dp.del_pod(ADDR, None, 0).is_ok());
        assert_eq!(dp.calls().len(), 3);
    }
}
