//! `policy-bench`: what NetworkPolicy enforcement costs, measured against
//! the same daemon with enforcement off, in the same run.
//!
//! Two nodes (network namespaces), each running `ipamd serve` on the
//! simulated cloud: one with `VPC_CNI_POLICY_SOURCE=off`, one with a `dir:`
//! source holding 1000 NetworkPolicies and 5000 pods of other nodes, in
//! standard mode (`--mode strict` for the other). The real plugin ADDs pods to both, alternating call by
//! call. Then, with 100 pods on the policy node, a policy file is changed
//! and the time until the kernel's table shows the change is measured.
//! Last, both daemons' memory. Results go to bench/RESULTS.md between the
//! `policy` markers.
//!
//! Run as root: `target/release/policy-bench [--quick]` (or `scripts/bench.sh`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const NAMESPACES: usize = 50;
const PODS_PER_NAMESPACE: usize = 100;
const POLICIES_PER_NAMESPACE: usize = 20;
const LOCAL_NS: &str = "ns-000";
const INSTANCE_TYPE: &str = "c5.18xlarge";

struct Options {
    adds: usize,
    changes: usize,
    /// `VPC_CNI_POLICY_MODE` of the node with enforcement on.
    mode: &'static str,
    /// A smoke run: too few pods for the target (see [`target_cell`]).
    quick: bool,
}

/// Everything this run made; dropped in reverse: daemons stopped, namespaces deleted.
struct Run {
    prefix: String,
    namespaces: Vec<String>,
    daemons: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Run {
    fn netns(&mut self, name: &str) -> Result<String> {
        let full = format!("{}-{name}", self.prefix);
        let st = Command::new("ip").args(["netns", "add", &full]).status()?;
        if !st.success() {
            return Err(format!("ip netns add {full} failed").into());
        }
        self.namespaces.push(full.clone());
        Ok(full)
    }

    fn daemon(&mut self, bin: &Path, node: &str, policy: Option<(&Path, &str)>) -> Result<PathBuf> {
        let dir = self.dir.join(node);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("ipamd.sock");
        let log = std::fs::File::create(dir.join("ipamd.log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", node])
            .arg(bin.join("ipamd"))
            .arg("serve")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,ipamd::policy=debug")
            .env("VPC_CNI_CLOUD", "sim")
            .env("VPC_CNI_SOCKET", &socket)
            .env("VPC_CNI_STATE_DIR", dir.join("state"))
            .env("VPC_CNI_SIM_INSTANCE_TYPE", INSTANCE_TYPE)
            .env("MINIMUM_IP_TARGET", "450")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some((p, mode)) = policy {
            cmd.env("VPC_CNI_POLICY_SOURCE", format!("dir:{}", p.display()))
                .env("VPC_CNI_POLICY_MODE", mode);
        }
        self.daemons.push(cmd.spawn()?);
        Ok(socket)
    }
}

fn introspect(bin: &Path, socket: &Path) -> Result<Value> {
    let out = Command::new(bin.join("ipamd"))
        .args(["status", "--json"])
        .env("VPC_CNI_SOCKET", socket)
        .output()?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn wait_pool(bin: &Path, socket: &Path, want: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(v) = introspect(bin, socket) {
            if v["pool"]["total"].as_u64().unwrap_or(0) >= want {
                return Ok(());
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "pool at {} never reached {want} addresses",
        socket.display()
    )
    .into())
}

/// One plugin exec, timed from spawn to exit.
fn cni(bin: &Path, socket: &Path, verb: &str, pod: &str, netns: &str) -> Result<Duration> {
    let conf =
        json!({"cniVersion": "1.1.0", "name": "vpc", "type": "vpc-cni", "ipamdSocket": socket});
    let started = Instant::now();
    let mut child = Command::new(bin.join("vpc-cni"))
        .env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", format!("cid-{pod}"))
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin)
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={LOCAL_NS};K8S_POD_NAME={pod}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!("{verb} {pod}: {}", String::from_utf8_lossy(&out.stdout)).into());
    }
    Ok(took)
}

fn namespaces_yaml() -> String {
    let mut s = String::new();
    for n in 0..NAMESPACES {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{n:03}\n  labels:\n    kubernetes.io/metadata.name: ns-{n:03}\n    team: t{}\n",
            n % 5
        );
    }
    s
}

/// 5000 pods on other nodes, with addresses in 10.100.0.0/16.
fn remote_pods_yaml() -> String {
    let mut s = String::new();
    for n in 0..NAMESPACES {
        for j in 0..PODS_PER_NAMESPACE {
            let _ = write!(
                s,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: r-{j:03}\n  namespace: ns-{n:03}\n  labels:\n    app: a{}\nspec:\n  nodeName: other-{}\n  containers:\n  - name: c\n    image: x\n    ports:\n    - {{name: http, containerPort: 8080}}\nstatus:\n  podIP: 10.100.{n}.{}\n",
                j % POLICIES_PER_NAMESPACE,
                j % 7,
                j + 1
            );
        }
    }
    s
}

/// The pods of this node, known to the source before their ADD.
fn local_pods_yaml(count: usize) -> String {
    let mut s = String::new();
    for i in 0..count {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: l-{i:04}\n  namespace: {LOCAL_NS}\n  labels:\n    app: a{}\nspec:\n  containers:\n  - name: c\n    image: x\n",
            i % POLICIES_PER_NAMESPACE
        );
    }
    s
}

/// 20 policies per namespace; `port` is the first policy rule's port (the
/// change the enforcement measurement makes).
fn policies_yaml(ns: usize, port: u16) -> String {
    let mut s = String::new();
    for k in 0..POLICIES_PER_NAMESPACE {
        let _ = write!(
            s,
            "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: p-{k:02}
  namespace: ns-{ns:03}
spec:
  podSelector:
    matchLabels: {{app: a{k}}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {{app: a{next}}}
    ports:
    - {{protocol: TCP, port: {port}}}
  - from:
    - namespaceSelector:
        matchLabels: {{team: t{team}}}
      podSelector:
        matchExpressions:
        - {{key: app, operator: In, values: [a{k}, a{next}]}}
    ports:
    - {{protocol: TCP, port: 9000, endPort: 9100}}
  - from:
    - ipBlock:
        cidr: 192.168.0.0/16
        except: [192.168.{k}.0/24]
  egress:
  - to:
    - ipBlock:
        cidr: 10.100.0.0/16
        except: [10.100.{k}.0/24]
    ports:
    - {{protocol: UDP, port: 53}}
    - {{protocol: TCP, port: http}}
",
            next = (k + 1) % POLICIES_PER_NAMESPACE,
            team = k % 5,
        );
    }
    s
}

fn write_atomically(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

/// `veth → verdict` of the policy node's ingress map, via `nft -j`.
fn ingress_map(node: &str) -> Result<Vec<(String, String)>> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", node, "nft", "-j", "list", "map", "inet", "vpc_cni", "ingress",
        ])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut elems = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["map"]["elem"].as_array().into_iter().flatten() {
            elems.push((e[0].as_str().unwrap_or("").to_string(), e[1].to_string()));
        }
    }
    elems.sort();
    Ok(elems)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `ip netns exec` execs ipamd in place, so the child's pid is ipamd's.
fn daemon_pid(child: &Child) -> u32 {
    child.id()
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn ms(d: &[Duration]) -> Vec<f64> {
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().ok_or("no parent")?.to_path_buf())
}

fn log_lines(dir: &Path, node: &str, needle: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(node).join("ipamd.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "policy-bench",
    about = "What NetworkPolicy enforcement costs, against the same daemon with it off (run as root)",
    long_about = "What NetworkPolicy enforcement costs, against the same daemon with it off,
in the same run: ADD latency on two nodes (1000 policies, 5000 remote pods
on one), the time until a policy change reaches the kernel's table, and both
daemons' memory. Writes the policy section of bench/RESULTS.md (run as root).",
    args_override_self = true
)]
struct Cli {
    /// A smoke run: 40 ADDs and 2 policy changes instead of 300 and 7
    #[arg(long)]
    quick: bool,
    /// VPC_CNI_POLICY_MODE of the node with enforcement on
    #[arg(long, value_enum, default_value_t = Mode::Standard)]
    mode: Mode,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Standard,
    Strict,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Strict => "strict",
        }
    }
}

fn main() -> ExitCode {
    // A typo must not start a run that rewrites RESULTS.md: clap exits 2.
    let Cli { quick, mode } = Cli::parse();
    let mode = mode.as_str();
    let o = Options {
        adds: if quick { 40 } else { 300 },
        changes: if quick { 2 } else { 7 },
        mode,
        quick,
    };
    match run(&o, quick) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("policy-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(o: &Options, quick: bool) -> Result<()> {
    let bin = bin_dir()?;
    let prefix = format!("vpccni-polbench-{}", std::process::id());
    let mut run = Run {
        prefix: prefix.clone(),
        namespaces: Vec::new(),
        daemons: Vec::new(),
        dir: std::env::temp_dir().join(&prefix),
    };
    std::fs::create_dir_all(&run.dir)?;
    let policy_dir = run.dir.join("policy");
    std::fs::create_dir_all(&policy_dir)?;
    let machine = vpc_cni_bench::provenance::Machine::detect();
    write_atomically(&policy_dir, "namespaces.yaml", &namespaces_yaml())?;
    write_atomically(&policy_dir, "remote-pods.yaml", &remote_pods_yaml())?;
    write_atomically(&policy_dir, "local-pods.yaml", &local_pods_yaml(o.adds))?;
    for n in 0..NAMESPACES {
        write_atomically(
            &policy_dir,
            &format!("policies-{n:03}.yaml"),
            &policies_yaml(n, 80),
        )?;
    }
    let off_node = run.netns("off")?;
    let on_node = run.netns("on")?;
    let off_sock = run.daemon(&bin, &off_node, None)?;
    let on_sock = run.daemon(&bin, &on_node, Some((&policy_dir, o.mode)))?;
    wait_pool(&bin, &off_sock, o.adds as u64)?;
    wait_pool(&bin, &on_sock, o.adds as u64)?;
    let first = log_lines(&run.dir, &on_node, "policy snapshot enforced");
    eprintln!("policy-bench: both nodes ready; first snapshot: {first:?}");

    // (a) ADD latency, alternating call by call.
    let mut pods = Vec::new();
    for i in 0..o.adds {
        let a = run.netns(&format!("off-{i}"))?;
        let b = run.netns(&format!("on-{i}"))?;
        pods.push((format!("l-{i:04}"), a, b));
    }
    let (mut off_t, mut on_t) = (Vec::new(), Vec::new());
    for (i, (pod, a, b)) in pods.iter().enumerate() {
        if i % 2 == 0 {
            off_t.push(cni(&bin, &off_sock, "ADD", pod, a)?);
            on_t.push(cni(&bin, &on_sock, "ADD", pod, b)?);
        } else {
            on_t.push(cni(&bin, &on_sock, "ADD", pod, b)?);
            off_t.push(cni(&bin, &off_sock, "ADD", pod, a)?);
        }
    }
    let on_view = introspect(&bin, &on_sock)?;
    let off_view = introspect(&bin, &off_sock)?;
    // Keep 100 pods on the policy node (the rest are DELeted).
    let local = 100.min(o.adds);
    for (pod, a, b) in pods.iter().skip(local) {
        cni(&bin, &on_sock, "DEL", pod, b)?;
        cni(&bin, &off_sock, "DEL", pod, a)?;
    }
    thread::sleep(Duration::from_secs(1));

    // (b) policy change → enforcement on the local pods.
    let mut change_times = Vec::new();
    let mut apply_us = Vec::new();
    for c in 0..o.changes {
        let before = ingress_map(&on_node)?;
        let port = if c % 2 == 0 { 81 } else { 80 };
        let enforced_before = log_lines(&run.dir, &on_node, "policy snapshot enforced").len();
        let t0 = Instant::now();
        write_atomically(&policy_dir, "policies-000.yaml", &policies_yaml(0, port))?;
        let deadline = t0 + Duration::from_secs(30);
        loop {
            let now = ingress_map(&on_node)?;
            let changed = now.len() == before.len()
                && now
                    .iter()
                    .zip(&before)
                    .all(|(n, b)| n.0 == b.0 && n.1 != b.1);
            if changed {
                change_times.push(t0.elapsed());
                break;
            }
            if Instant::now() > deadline {
                return Err("a policy change was not enforced within 30 s".into());
            }
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(500));
        let lines = log_lines(&run.dir, &on_node, "policy snapshot enforced");
        for l in lines.iter().skip(enforced_before) {
            if let Some(v) = l
                .split("took_us=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            {
                if let Ok(us) = v.parse::<u64>() {
                    apply_us.push(Duration::from_micros(us));
                }
            }
        }
    }
    let field = |l: &str, name: &str| -> Option<u64> {
        l.split(&format!("{name}="))
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let installs = log_lines(&run.dir, &on_node, "pod policy installed");
    let plan: Vec<Duration> = installs
        .iter()
        .filter_map(|l| field(l, "plan_us"))
        .map(Duration::from_micros)
        .collect();
    let apply: Vec<Duration> = installs
        .iter()
        .filter_map(|l| field(l, "apply_us"))
        .map(Duration::from_micros)
        .collect();
    let on_rss = rss_kib(daemon_pid(&run.daemons[1]));
    let off_rss = rss_kib(daemon_pid(&run.daemons[0]));
    let chains = Command::new("ip")
        .args([
            "netns", "exec", &on_node, "nft", "list", "table", "inet", "vpc_cni",
        ])
        .output()?;
    let table = String::from_utf8_lossy(&chains.stdout);
    let chain_count = table
        .lines()
        .filter(|l| l.trim_start().starts_with("chain "))
        .count();
    let set_count = table
        .lines()
        .filter(|l| l.trim_start().starts_with("set "))
        .count();

    let report = render(
        o,
        &machine,
        &ms(&off_t),
        &ms(&on_t),
        &ms(&change_times),
        &ms(&apply_us),
        (off_rss, on_rss),
        (chain_count, set_count),
        (&ms(&plan), &ms(&apply)),
        local,
        (&off_view, &on_view),
    );
    print!("{report}");
    if !quick {
        publish(&report)?;
    }
    Ok(())
}

/// The ADD p50 overhead against its target (≤ +0.2 ms). A quick run is not
/// judged: with 40 pods over 20 allow lists, half its ADDs are the first of
/// their list and build its chain and sets, which the full run's 300
/// amortise as a cluster's pods do.
fn target_cell(quick: bool, overhead_ms: f64) -> String {
    if quick {
        "≤ +0.20 ms in the full run (not judged on a quick run)".to_string()
    } else {
        format!("≤ +0.20 ms {}", if overhead_ms <= 0.2 { "✓" } else { "✗" })
    }
}

#[allow(clippy::too_many_arguments)]
fn render(
    o: &Options,
    machine: &vpc_cni_bench::provenance::Machine,
    off: &[f64],
    on: &[f64],
    change: &[f64],
    apply: &[f64],
    rss: (u64, u64),
    table: (usize, usize),
    split: (&[f64], &[f64]),
    local: usize,
    views: (&Value, &Value),
) -> String {
    let load = vpc_cni_bench::provenance::load_average();
    let mean = |v: &Value| v["metrics"]["ADD"]["meanUs"].as_f64();
    let overhead = pct(on, 0.5) - pct(off, 0.5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## NetworkPolicy enforcement: cost on the pod path, time to enforce, memory\n"
    );
    let _ = writeln!(
        s,
        "Measured on {} (load average at the end {:.2} {:.2} {:.2}; machines here are shared, so compare the two columns of one run, not absolute times). Two nodes in the same run, each `ipamd serve` on the simulated {INSTANCE_TYPE}: **off** (`VPC_CNI_POLICY_SOURCE=off`) and **on** (`dir:` source, {} mode) holding {} NetworkPolicies ({} per namespace, each with podSelector, namespaceSelector+podSelector with matchExpressions, ipBlock with except, numeric, named and endPort ports, ingress and egress) and {} pods of other nodes in {} namespaces, plus this node's pods.\n",
        machine.headline(),
        load[0],
        load[1],
        load[2],
        o.mode,
        NAMESPACES * POLICIES_PER_NAMESPACE,
        POLICIES_PER_NAMESPACE,
        NAMESPACES * PODS_PER_NAMESPACE,
        NAMESPACES
    );
    let _ = writeln!(
        s,
        "| metric | policy off | policy on | difference | target |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    let _ = writeln!(
        s,
        "| ADD p50 ({} pods each, plugin exec'd, alternating) | {:.2} ms | {:.2} ms | {:+.2} ms | {} |",
        o.adds,
        pct(off, 0.5),
        pct(on, 0.5),
        overhead,
        target_cell(o.quick, overhead)
    );
    let _ = writeln!(
        s,
        "| ADD p90 | {:.2} ms | {:.2} ms | {:+.2} ms | |",
        pct(off, 0.9),
        pct(on, 0.9),
        pct(on, 0.9) - pct(off, 0.9)
    );
    let _ = writeln!(
        s,
        "| ADD p99 | {:.2} ms | {:.2} ms | {:+.2} ms | |",
        pct(off, 0.99),
        pct(on, 0.99),
        pct(on, 0.99) - pct(off, 0.99)
    );
    if let (Some(a), Some(b)) = (mean(views.0), mean(views.1)) {
        let _ = writeln!(
            s,
            "| ADD mean inside ipamd (its own counters) | {:.0} µs | {:.0} µs | {:+.0} µs | |",
            a,
            b,
            b - a
        );
    }
    if !split.0.is_empty() {
        let _ = writeln!(
            s,
            "| of which the policy hook in ADD: rules + plan / netlink transaction (p50) | | {:.0} µs / {:.0} µs | | |",
            pct(split.0, 0.5) * 1e3,
            pct(split.1, 0.5) * 1e3
        );
    }
    let _ = writeln!(
        s,
        "| ipamd RSS with that state ({local} local pods) | {:.1} MiB | {:.1} MiB | {:+.1} MiB | |",
        rss.0 as f64 / 1024.0,
        rss.1 as f64 / 1024.0,
        (rss.1 as f64 - rss.0 as f64) / 1024.0
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| policy change in the source → enforced on {local} local pods | p50 | max | samples |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| file renamed → every local pod's map element points at its new chain (seen with `nft -j`) | {:.0} ms | {:.0} ms | {} |",
        pct(change, 0.5),
        change.last().copied().unwrap_or(f64::NAN),
        change.len()
    );
    let _ = writeln!(
        s,
        "| of which the engine's diff and transaction (recompute {local} pods, one netlink batch) | {:.1} ms | {:.1} ms | {} |",
        pct(apply, 0.5),
        apply.last().copied().unwrap_or(f64::NAN),
        apply.len()
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "After the run the table held {} chains and {} sets for {local} pods: pods with the same allow list share one chain. The rest of the change-to-enforcement time is the `dir:` source noticing the file (it polls every 200 ms) and parsing it; with `kube` the watch event replaces the poll.\n",
        table.0, table.1
    );
    let _ = writeln!(s, "The hook's own cost is the honest measure of the overhead: it runs inside ADD, before the veth is made (rules from the per-class cache, then one netlink transaction that only adds map elements). The first pod of each allow list (here 20 classes, 2 directions) also builds its chain and sets, which is what moves the mean and the tail.\n");
    let _ = writeln!(s, "How: `target/release/policy-bench` (`scripts/bench.sh` runs it). Pod namespaces are made beforehand; each ADD is the real `vpc-cni` exec'd with a cleared environment, timed from spawn to exit, the two nodes alternating call by call so drift hits both alike. The policy change flips the port of one rule in the 20 policies of the local pods' namespace (write + rename); the time runs until `nft -j list map inet vpc_cni ingress` shows every local pod on a new chain, polled every 2 ms.");
    s
}

fn publish(section: &str) -> Result<()> {
    let path = vpc_cni_bench::results::results_md();
    vpc_cni_bench::results::write_section(
        &path,
        "policy",
        "target/release/policy-bench (bench/src/bin/policy-bench.rs)",
        section,
    )?;
    eprintln!("policy-bench: wrote its section of {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_run_is_judged() {
        assert!(target_cell(false, 0.19).ends_with('✓'));
        assert!(target_cell(false, 0.21).ends_with('✗'));
        let quick = target_cell(true, 4.4);
        assert!(!quick.contains('✗') && !quick.contains('✓'), "{quick}");
    }

    #[test]
    fn the_command_line() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("policy-bench").chain(args.iter().copied()))
        };
        let c = parse(&[]).unwrap();
        assert_eq!((c.quick, c.mode.as_str()), (false, "standard"));
        let c = parse(&["--quick", "--mode=strict"]).unwrap();
        assert_eq!((c.quick, c.mode.as_str()), (true, "strict"));
        assert_eq!(
            parse(&["--mode", "standard"]).unwrap().mode.as_str(),
            "standard"
        );
        for bad in [
            &["--mode", "lax"][..],
            &["--mode"],
            &["--quick=yes"],
            &["--frobnicate"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
    }
}
