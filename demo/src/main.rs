//! `vpc-cni-demo` (also run as `ipamd demo`): a throwaway node on the
//! simulated cloud, with real pods.
//!
//! It makes a node network namespace, starts `ipamd serve` in it on the
//! `sim` cloud, execs the real `vpc-cni` plugin for a handful of pods the
//! way kubelet does, proves the pods can talk (TCP and ICMP), shows a
//! default-deny NetworkPolicy blocking traffic and an allow rule restoring
//! it ([`policy`]), shows the pool as `ipamd status` does, deletes the pods, and removes everything it made,
//! also on error and on Ctrl-C.
//!
//! One concern per module: [`preflight`] (root, tools), [`node`] (namespaces,
//! temp dir, the daemon), [`ip`] (running `ip`), [`plugin`] (the CNI exec),
//! [`connectivity`] (the checks), [`render`] (durations and what it reads of
//! the daemon's view; the status text is `ipamd::status`),
//! [`cleanup`] (the undo registry, its guard and the signal path), [`error`].
//! This file runs the steps in order and keeps the score.

mod cleanup;
mod connectivity;
mod error;
mod ip;
mod node;
mod plugin;
mod policy;
mod preflight;
mod render;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use cni_plugin::wire::{Command, Request};
use serde_json::Value;

use cleanup::{Guard, Outcome, Registry};
use connectivity::{Endpoint, Verdict};
use node::{Daemon, Netns};
use plugin::{Added, Plugin, Sandbox};
use preflight::Tools;
use render::{ms, Table};

use error::DemoError;
use render::render_status;

/// The pods: two Kubernetes namespaces, few enough for the warm pool.
const PODS: [(&str, &str); 6] = [
    ("shop", "frontend-0"),
    ("shop", "frontend-1"),
    ("shop", "cart-0"),
    ("billing", "api-0"),
    ("billing", "api-1"),
    ("billing", "ledger-0"),
];

/// Connectivity checks, each run over TCP and ICMP (`node` is the node).
const CHECKS: [(&str, &str); 4] = [
    ("shop/frontend-0", "billing/api-0"),
    ("billing/api-1", "shop/cart-0"),
    ("node", "shop/frontend-1"),
    ("node", "billing/ledger-0"),
];

const STEPS: usize = 8;
/// How long the daemon gets to answer STATUS after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one INTROSPECT call.
const INTROSPECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per policy check before it counts as failed.
const POLICY_TRIES: usize = 4;
/// Lines of the daemon's log shown when something failed.
const LOG_LINES: usize = 40;

const HELP: &str = "usage: ipamd demo

Builds a throwaway node (network namespace vpccni-demo-<pid>) running
`ipamd serve` on the simulated cloud, wires six pods with the real vpc-cni
plugin, checks they can talk, shows a default-deny NetworkPolicy blocking
traffic and an allow rule restoring it, shows the pool, then deletes the pods and
removes everything it made, also on error or Ctrl-C. Needs root and `ip`.
";

/// Entry point of `ipamd demo`.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("-h" | "--help") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprint!("ipamd demo: unexpected argument {other:?}\n{HELP}");
            return ExitCode::from(2);
        }
    }
    let registry = Registry::default();
    // First: from here on, Ctrl-C undoes whatever has been made.
    if let Err(e) = cleanup::on_signals(registry.clone()) {
        eprintln!("ipamd demo: {e}");
        return ExitCode::FAILURE;
    }
    let guard = Guard::new(registry.clone());
    let mut demo = Demo::new(registry);
    if let Err(e) = demo.run() {
        demo.fail(e.to_string());
    }
    if demo.failed > 0 {
        demo.show_daemon_log();
    }
    demo.teardown(guard);
    demo.verdict()
}

/// The node: its namespace, the daemon in it, the plugin that reaches it.
struct Node {
    netns: Netns,
    daemon: Daemon,
    plugin: Plugin,
}

/// A pod and, if ADD worked, what it got.
struct Pod {
    sandbox: Sandbox,
    wired: Option<Wired>,
}

/// A successful ADD.
struct Wired {
    added: Added,
    took: Duration,
}

/// The run: what it made so far and the score.
struct Demo {
    registry: Registry,
    /// `vpccni-demo-<pid>`: the node namespace, prefix of the pods' ones.
    prefix: String,
    daemon_log: Option<PathBuf>,
    /// Where the daemon reads Namespaces, Pods and NetworkPolicies.
    policy_dir: Option<PathBuf>,
    passed: usize,
    failed: usize,
}

impl Demo {
    fn new(registry: Registry) -> Self {
        Demo {
            registry,
            prefix: format!("vpccni-demo-{}", std::process::id()),
            daemon_log: None,
            policy_dir: None,
            passed: 0,
            failed: 0,
        }
    }

    /// Steps 1 to 7; the teardown (step 8) runs whatever happens here.
    fn run(&mut self) -> Result<(), DemoError> {
        println!("vpc-cni demo: a throwaway node on the simulated VPC, with real pods");
        let tools = self.preflight()?;
        let node = self.start_node(&tools)?;
        let pods = self.add_pods(&node)?;
        self.check_connectivity(&node, &pods, tools.ping)?;
        self.show_policy(&node, &pods)?;
        self.show_pool(&node)?;
        self.del_pods(&node, &pods)
    }

    fn preflight(&mut self) -> Result<Tools, DemoError> {
        step(1, "preflight");
        let tools = preflight::check()?;
        self.pass(format!(
            "root, ip, plugin {}{}",
            tools.plugin.display(),
            if tools.ping { ", ping" } else { "" }
        ));
        Ok(tools)
    }

    fn start_node(&mut self, tools: &Tools) -> Result<Node, DemoError> {
        step(
            2,
            "node: a network namespace running `ipamd serve` on the sim cloud",
        );
        let netns = Netns::create(&self.registry, self.prefix.clone())?;
        let dir = node::temp_dir(&self.registry, &self.prefix)?;
        let policy_dir = dir.join("policy");
        let io_err = |what: &str| {
            let what = format!("{what} {}", policy_dir.display());
            move |source| DemoError::Io { what, source }
        };
        std::fs::create_dir(&policy_dir).map_err(io_err("create"))?;
        let unknown: Vec<_> = PODS.iter().map(|(ns, name)| (*ns, *name, None)).collect();
        policy::write(&policy_dir, "cluster.yaml", &policy::cluster_yaml(&unknown))
            .map_err(io_err("write into"))?;
        self.policy_dir = Some(policy_dir.clone());
        let daemon = Daemon::start(&self.registry, &tools.ipamd, &netns, &dir, &policy_dir)?;
        self.daemon_log = Some(daemon.log_path().to_path_buf());
        let plugin = Plugin::new(tools.plugin.clone(), daemon.socket());
        let ready_in = wait_ready(&daemon, &plugin)?;
        self.pass(format!(
            "ipamd (pid {}) in namespace {} answered STATUS after {}",
            daemon.pid(),
            netns.name(),
            ms(ready_in)
        ));
        println!("    {}", render::node_summary(&introspect(&daemon)?));
        Ok(Node {
            netns,
            daemon,
            plugin,
        })
    }

    /// Per pod, what the runtime does: make its namespace, then ADD.
    fn add_pods(&mut self, node: &Node) -> Result<Vec<Pod>, DemoError> {
        step(3, "ADD: the plugin exec'd for each pod, as kubelet does");
        let mut pods = Vec::new();
        for (namespace, name) in PODS {
            let netns_name = format!("{}-{namespace}-{name}", self.prefix);
            let sandbox = Sandbox::new(namespace, name, Netns::create(&self.registry, netns_name)?);
            let wired = match node.plugin.add(&sandbox) {
                Ok((added, took)) => Some(Wired { added, took }),
                Err(e) => {
                    self.fail(format!("ADD {}: {e}", sandbox.label()));
                    None
                }
            };
            pods.push(Pod { sandbox, wired });
        }
        print!("{}", add_table(&pods, &introspect(&node.daemon)?).render());
        Ok(pods)
    }

    fn check_connectivity(
        &mut self,
        node: &Node,
        pods: &[Pod],
        have_ping: bool,
    ) -> Result<(), DemoError> {
        step(4, "connectivity (TCP in-process via setns, ICMP with ping)");
        let node_ip = render::primary_ip(&introspect(&node.daemon)?);
        let paths: Vec<String> = CHECKS.iter().map(|(a, b)| format!("{a} → {b}")).collect();
        let width = paths.iter().map(|p| p.chars().count()).max().unwrap_or(0);
        for ((from, to), path) in CHECKS.iter().zip(paths) {
            let path = format!("{path:<width$}");
            let src = endpoint(from, node, node_ip, pods);
            let dst = endpoint(to, node, node_ip, pods);
            let (Some(src), Some(dst)) = (src, dst) else {
                self.fail(format!("{path}  not tried: an end has no address"));
                continue;
            };
            self.verdict_line("TCP ", &path, connectivity::tcp(&src, &dst));
            self.verdict_line("ICMP", &path, connectivity::icmp(&src, &dst, have_ping));
        }
        Ok(())
    }

    /// A default-deny blocks traffic into `billing`, an allow rule lets the
    /// frontends back in to the API (and nobody else), and deleting both
    /// restores everything; the node reaches its pods throughout.
    fn show_policy(&mut self, node: &Node, pods: &[Pod]) -> Result<(), DemoError> {
        step(
            5,
            "NetworkPolicy: default-deny, then an allow rule, enforced with nftables",
        );
        let Some(dir) = self.policy_dir.clone() else {
            return Ok(());
        };
        let io_err = |what: String| move |source| DemoError::Io { what, source };
        let known: Vec<_> = pods
            .iter()
            .map(|p| {
                (
                    p.sandbox.namespace,
                    p.sandbox.name,
                    p.wired.as_ref().map(|w| w.added.ip),
                )
            })
            .collect();
        policy::write(&dir, "cluster.yaml", &policy::cluster_yaml(&known))
            .map_err(io_err(format!("write {}", dir.display())))?;
        let node_ip = render::primary_ip(&introspect(&node.daemon)?);
        let expect = |demo: &mut Demo, from: &str, to: &str, open: bool| {
            let (Some(src), Some(dst)) = (
                endpoint(from, node, node_ip, pods),
                endpoint(to, node, node_ip, pods),
            ) else {
                demo.fail(format!("{from} → {to}  not tried: an end has no address"));
                return;
            };
            demo.expect_tcp(&src, &dst, open);
        };
        println!("  billing/default-deny: podSelector {{}}, policyTypes [Ingress], no rule");
        policy::write(&dir, "deny.yaml", policy::DENY_BILLING)
            .map_err(io_err(format!("write {}", dir.display())))?;
        expect(self, "shop/frontend-0", "billing/api-0", false);
        expect(self, "shop/cart-0", "billing/ledger-0", false);
        expect(self, "node", "billing/ledger-0", true);
        expect(self, "billing/api-1", "shop/cart-0", true);
        println!("  billing/api-from-frontend: app=api accepts shop's app=frontend on TCP 8080");
        policy::write(&dir, "allow.yaml", policy::ALLOW_FRONTEND_TO_API)
            .map_err(io_err(format!("write {}", dir.display())))?;
        expect(self, "shop/frontend-0", "billing/api-0", true);
        expect(self, "shop/frontend-1", "billing/api-1", true);
        expect(self, "shop/cart-0", "billing/api-0", false);
        println!("  both policies deleted");
        for name in ["allow.yaml", "deny.yaml"] {
            policy::remove(&dir, name).map_err(io_err(format!("remove {name}")))?;
        }
        expect(self, "shop/cart-0", "billing/api-0", true);
        Ok(())
    }

    /// Tries TCP until it does what the policy says (the source publishes a
    /// change within a second), at most [`POLICY_TRIES`] times.
    fn expect_tcp(&mut self, src: &Endpoint<'_>, dst: &Endpoint<'_>, open: bool) {
        let path = format!("{} → {}", src.label, dst.label);
        let mut last = String::new();
        for _ in 0..POLICY_TRIES {
            match (connectivity::tcp(src, dst), open) {
                (Verdict::Pass(seen), true) => {
                    return self.pass(format!("TCP  {path}  allowed: {seen}"))
                }
                (Verdict::Fail(_), false) => return self.pass(format!("TCP  {path}  blocked")),
                (Verdict::Pass(seen), false) => last = format!("still allowed: {seen}"),
                (Verdict::Fail(why), true) => last = format!("still blocked: {why}"),
                (Verdict::Skipped(why), _) => last = why,
            }
            thread::sleep(Duration::from_millis(300));
        }
        self.fail(format!("TCP  {path}  {last}"));
    }

    fn verdict_line(&mut self, proto: &str, path: &str, verdict: Verdict) {
        match verdict {
            Verdict::Pass(seen) => self.pass(format!("{proto}  {path}  {seen}")),
            Verdict::Fail(why) => self.fail(format!("{proto}  {path}  {why}")),
            Verdict::Skipped(why) => println!("  - {proto}  {path}  skipped: {why}"),
        }
    }

    fn show_pool(&mut self, node: &Node) -> Result<(), DemoError> {
        step(6, "pool: what `ipamd status` shows");
        for line in render_status(&introspect(&node.daemon)?).lines() {
            println!("    {line}");
        }
        Ok(())
    }

    /// DEL for every pod ADD wired, then the latencies and the pool.
    fn del_pods(&mut self, node: &Node, pods: &[Pod]) -> Result<(), DemoError> {
        step(7, "DEL: the plugin exec'd for each pod");
        let mut del_times = Vec::new();
        for pod in pods.iter().filter(|p| p.wired.is_some()) {
            match node.plugin.del(&pod.sandbox) {
                Ok(took) => del_times.push(took),
                Err(e) => self.fail(format!("DEL {}: {e}", pod.sandbox.label())),
            }
        }
        if !del_times.is_empty() {
            self.pass(format!("DEL answered for {} pods", del_times.len()));
        }
        let add_times: Vec<Duration> = pods.iter().flat_map(|p| &p.wired).map(|w| w.took).collect();
        println!("    ADD {}", latency(&add_times));
        println!("    DEL {}", latency(&del_times));
        self.check_pool_empty(&introspect(&node.daemon)?);
        Ok(())
    }

    fn pass(&mut self, what: String) {
        println!("  ✓ {what}");
        self.passed += 1;
    }

    fn fail(&mut self, what: String) {
        println!("  ✗ {what}");
        self.failed += 1;
    }

    fn check_pool_empty(&mut self, view: &Value) {
        let pool = &view["pool"];
        match (pool["used"].as_u64(), pool["free"].as_u64()) {
            (Some(0), Some(free)) => self.pass(format!(
                "every address is back in the pool: 0 used, {free} free"
            )),
            (used, _) => self.fail(format!(
                "pool still has {} addresses in use after DEL",
                used.map_or_else(|| "?".to_string(), |u| u.to_string())
            )),
        }
    }

    fn show_daemon_log(&self) {
        let Some(log) = &self.daemon_log else { return };
        println!("\nipamd log ({}, last {LOG_LINES} lines):", log.display());
        match node::tail(log, LOG_LINES) {
            Ok(text) if text.trim().is_empty() => println!("    (empty)"),
            Ok(text) => text.lines().for_each(|l| println!("    {l}")),
            Err(e) => println!("    cannot read it: {e}"),
        }
    }

    /// Stops the daemon and removes every namespace and the temp dir, then
    /// looks for leftovers (as `ip netns list` would show them).
    fn teardown(&mut self, guard: Guard) {
        let outcomes: Vec<Outcome> = guard.finish();
        if outcomes.is_empty() {
            return; // Nothing was made.
        }
        step(
            STEPS,
            "teardown: stop ipamd, delete the namespaces and the temp dir",
        );
        for outcome in outcomes {
            match outcome {
                Ok(done) => println!("  ✓ {done}"),
                Err(failed) => self.fail(failed),
            }
        }
        match node::netns_named(&self.prefix) {
            Ok(left) if left.is_empty() => self.pass(format!("no {}* namespace left", self.prefix)),
            Ok(left) => self.fail(format!("namespaces left behind: {}", left.join(", "))),
            Err(e) => self.fail(format!("cannot list namespaces: {e}")),
        }
    }

    fn verdict(&self) -> ExitCode {
        println!();
        if self.failed == 0 {
            println!("demo passed: {} ✓", checks(self.passed));
            ExitCode::SUCCESS
        } else {
            println!(
                "demo FAILED: {} failed, {} passed",
                checks(self.failed),
                checks(self.passed)
            );
            ExitCode::FAILURE
        }
    }
}

fn checks(n: usize) -> String {
    format!("{n} check{}", if n == 1 { "" } else { "s" })
}

fn step(n: usize, title: &str) {
    println!("\n[{n}/{STEPS}] {title}");
}

/// A check's end by label: `node`, or a pod that ADD wired.
fn endpoint<'a>(
    label: &str,
    node: &'a Node,
    node_ip: Option<Ipv4Addr>,
    pods: &'a [Pod],
) -> Option<Endpoint<'a>> {
    let (netns, ip) = if label == "node" {
        (&node.netns, node_ip?)
    } else {
        let pod = pods.iter().find(|p| p.sandbox.label() == label)?;
        (&pod.sandbox.netns, pod.wired.as_ref()?.added.ip)
    };
    Some(Endpoint {
        label: label.to_string(),
        netns,
        ip,
    })
}

/// The ADD table: the ENI comes from the daemon's view, by the pod's
/// `eniIndex`, since the CNI result does not name it.
fn add_table(pods: &[Pod], view: &Value) -> Table {
    let mut table = Table::new(4, &["POD", "IP", "ENI", "HOST VETH", "ADD"]);
    for pod in pods {
        let Some(wired) = &pod.wired else { continue };
        table.row(vec![
            pod.sandbox.label(),
            wired.added.ip.to_string(),
            render::eni_of(view, &pod.sandbox.container_id)
                .unwrap_or("?")
                .to_string(),
            wired.added.host_veth.clone(),
            ms(wired.took),
        ]);
    }
    table
}

/// Polls CNI STATUS through the plugin until ipamd is ready, it exits, or
/// [`READY_TIMEOUT`] passes.
fn wait_ready(daemon: &Daemon, plugin: &Plugin) -> Result<Duration, DemoError> {
    let started = Instant::now();
    loop {
        if let Some(status) = daemon.exited() {
            return Err(DemoError::DaemonExited(status));
        }
        match plugin.status() {
            Ok(()) => return Ok(started.elapsed()),
            Err(last) if started.elapsed() >= READY_TIMEOUT => {
                return Err(DemoError::NotReady {
                    after: READY_TIMEOUT,
                    last,
                })
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The INTROSPECT view, as `ipamd status --json` prints it.
fn introspect(daemon: &Daemon) -> Result<Value, DemoError> {
    let req = Request::for_daemon(Command::Introspect, Value::Null);
    cni_plugin::client::call(daemon.socket(), &req, INTROSPECT_TIMEOUT)
        .map_err(DemoError::Introspect)
}

/// `p50 1.9 ms, max 3.1 ms over 6 execs`.
fn latency(times: &[Duration]) -> String {
    match (p50(times), times.iter().max()) {
        (Some(p50), Some(max)) => format!(
            "p50 {}, max {} over {} plugin execs",
            ms(p50),
            ms(*max),
            times.len()
        ),
        _ => "no successful exec".to_string(),
    }
}

/// The median (the lower one for an even count).
fn p50(times: &[Duration]) -> Option<Duration> {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p50_is_the_lower_median() {
        let ms = Duration::from_millis;
        assert_eq!(p50(&[]), None);
        assert_eq!(p50(&[ms(3)]), Some(ms(3)));
        assert_eq!(p50(&[ms(9), ms(1), ms(4), ms(2)]), Some(ms(2)));
        assert_eq!(p50(&[ms(9), ms(1), ms(4)]), Some(ms(4)));
        assert!(latency(&[ms(2), ms(4)]).starts_with("p50 2.0 ms, max 4.0 ms"));
    }
}
