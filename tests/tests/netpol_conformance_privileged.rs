//! NetworkPolicy conformance as truth tables, after Kubernetes' own netpol
//! e2e model: namespaces x, y, z, each with pods a, b, c, every pod serving
//! TCP and UDP on ports 80 and 81, all on one node. For each case the test
//! writes the policies into the daemon's `dir:` source, waits until the
//! dataplane shows the expected behaviour, and compares the full table of
//! every pod → pod probe (port × protocol) with the case's expectation.
//!
//! Expectations are written by hand from each case's definition, not
//! computed by ipamd's evaluator, so a bug there shows up here.
//!
//! Probes are real packets between the pods' namespaces: server threads
//! bound inside each pod namespace, client threads entering the source pod
//! namespace (`setns` on throwaway threads; the test thread never moves).
//! SCTP cannot be probed on this kernel (no SCTP module), so the SCTP case
//! checks that a port opened for SCTP opens nothing for TCP or UDP.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use vpc_cni_e2e::{result_ip, Netns, Node, PodSpec, TempDir};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 2] = [80, 81];

/// A probe that gets no answer within this is a denied one. Generous: an
/// allowed probe that is slow on a loaded machine only costs a retry of the
/// round, but a short timeout would make rounds flap.
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);
/// How long a case may take to show its table (the source publishes within
/// 1 s; the rest is slack for a loaded machine).
const CONVERGE: Duration = Duration::from_secs(10);
/// After the table first matches, wait this long and probe again: a table
/// that matched by coincidence while the previous case was still in force
/// would not match any more once the new one is (in force within 1 s).
const SETTLE: Duration = Duration::from_millis(1200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Proto {
    Tcp,
    Udp,
}
use Proto::{Tcp, Udp};

/// A pod by namespace and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct P {
    ns: &'static str,
    pod: &'static str,
}

impl std::fmt::Display for P {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ns, self.pod)
    }
}

const fn p(ns: &'static str, pod: &'static str) -> P {
    P { ns, pod }
}
const XA: P = p("x", "a");
const XB: P = p("x", "b");
const YB: P = p("y", "b");
const YC: P = p("y", "c");
const ZB: P = p("z", "b");
const ZC: P = p("z", "c");

/// One cell of the truth table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Probe {
    from: P,
    to: P,
    port: u16,
    proto: Proto,
}

type Table = BTreeMap<Probe, bool>;

fn all_pods() -> impl Iterator<Item = P> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |pod| p(ns, pod)))
}

fn all_probes() -> Vec<Probe> {
    let mut v = Vec::new();
    for from in all_pods() {
        for to in all_pods() {
            for port in PORTS {
                for proto in [Tcp, Udp] {
                    v.push(Probe {
                        from,
                        to,
                        port,
                        proto,
                    });
                }
            }
        }
    }
    v
}

/// The container port every pod names `web` (TCP): b swaps the numbers, so
/// a named port resolved on the wrong side shows up in the table.
fn web_port(pod: P) -> u16 {
    if pod.pod == "b" {
        81
    } else {
        80
    }
}

/// The container port every pod names `dns` (UDP), swapped the same way.
fn dns_port(pod: P) -> u16 {
    if pod.pod == "b" {
        80
    } else {
        81
    }
}

// ---------------------------------------------------------------------------
// Servers and probes
// ---------------------------------------------------------------------------

fn enter(netns: &Path) -> Result<(), String> {
    let f = File::open(netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {}: {e}", netns.display()))
}

/// TCP and UDP servers on ports 80 and 81 of every pod; stopped and joined
/// on drop so no thread keeps a pod namespace alive.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(pods: &BTreeMap<P, (PathBuf, Ipv4Addr)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        for (netns, ip) in pods.values() {
            for port in PORTS {
                for proto in [Tcp, Udp] {
                    let (netns, ip, stop, ready) =
                        (netns.clone(), *ip, stop.clone(), ready_tx.clone());
                    threads.push(thread::spawn(move || {
                        serve(&netns, ip, port, proto, &stop, ready)
                    }));
                }
            }
        }
        drop(ready_tx);
        let servers = Servers { stop, threads };
        for r in ready_rx.iter() {
            r.expect("probe server starts");
        }
        servers
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(
    netns: &Path,
    ip: Ipv4Addr,
    port: u16,
    proto: Proto,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let addr = SocketAddr::from((ip, port));
    let setup = || -> Result<Result<TcpListener, UdpSocket>, String> {
        enter(netns)?;
        match proto {
            Tcp => {
                let l = TcpListener::bind(addr).map_err(|e| format!("bind tcp {addr}: {e}"))?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok(Ok(l))
            }
            Udp => {
                let s = UdpSocket::bind(addr).map_err(|e| format!("bind udp {addr}: {e}"))?;
                s.set_read_timeout(Some(Duration::from_millis(50)))
                    .map_err(|e| e.to_string())?;
                Ok(Err(s))
            }
        }
    };
    let sock = match setup() {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        match &sock {
            // One byte then close: the client reads it, so an allowed probe
            // has carried data both ways.
            Ok(l) => match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"k");
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            },
            Err(u) => {
                if let Ok((n, peer)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(&buf[..n], peer);
                }
            }
        }
    }
}

/// A UDP client socket on a source port no earlier probe used. Conntrack
/// keeps a UDP flow for up to two minutes; a probe that happened to reuse
/// the 5-tuple of an earlier, then-allowed probe would ride that flow past
/// a policy that now denies it (existing flows surviving a policy change is
/// how every conntrack-based enforcer behaves, but it is not what a case
/// asks). A run sends far fewer UDP probes than the range holds.
fn udp_client() -> Option<UdpSocket> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    for _ in 0..16 {
        let port = 20_000 + (NEXT.fetch_add(1, Ordering::Relaxed) % 40_000) as u16;
        if let Ok(s) = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))) {
            return Some(s);
        }
    }
    None
}

/// One probe from inside the namespace the calling thread is in.
fn probe_here(to: Ipv4Addr, port: u16, proto: Proto) -> bool {
    let addr = SocketAddr::from((to, port));
    match proto {
        Tcp => {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
            let mut b = [0u8; 1];
            matches!(s.read(&mut b), Ok(1))
        }
        Udp => {
            let Some(s) = udp_client() else {
                return false;
            };
            let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
            if s.connect(addr).is_err() || s.send(b"ping").is_err() {
                return false;
            }
            let mut b = [0u8; 8];
            matches!(s.recv(&mut b), Ok(4))
        }
    }
}

/// One probe from inside `from` (a thread that enters it and ends).
fn probe_from(from: &Path, to: Ipv4Addr, port: u16, proto: Proto) -> JoinHandle<bool> {
    let from = from.to_path_buf();
    thread::spawn(move || enter(&from).is_ok() && probe_here(to, port, proto))
}

// ---------------------------------------------------------------------------
// The cluster: node, pods, the policy directory
// ---------------------------------------------------------------------------

type Labels = BTreeMap<&'static str, &'static str>;

struct Cluster {
    // Drop order: servers leave the pod namespaces before they are deleted.
    servers: Option<Servers>,
    pods: BTreeMap<P, (PodSpec, Ipv4Addr)>,
    node: Node,
    dir: TempDir,
    ns_labels: BTreeMap<&'static str, Labels>,
    pod_labels: BTreeMap<P, Labels>,
}

impl Cluster {
    fn new() -> Self {
        let dir = TempDir::new();
        let source = format!("dir:{}", dir.path().display());
        let node = Node::start_with(&[
            ("VPC_CNI_POLICY_SOURCE", &source),
            ("VPC_CNI_POLICY_MODE", "standard"),
        ]);
        let ns_labels = BTreeMap::from([
            ("x", Labels::from([("ns", "x")])),
            ("y", Labels::from([("ns", "y"), ("env", "dev")])),
            ("z", Labels::from([("ns", "z"), ("env", "prod")])),
        ]);
        let pod_labels = all_pods()
            .map(|p| (p, Labels::from([("pod", p.pod)])))
            .collect();
        let mut c = Cluster {
            servers: None,
            pods: BTreeMap::new(),
            node,
            dir,
            ns_labels,
            pod_labels,
        };
        for pod in all_pods() {
            let spec = PodSpec {
                netns: Netns::new(),
                container_id: format!("cid-{}-{}", pod.ns, pod.pod),
                namespace: pod.ns.to_string(),
                name: pod.pod.to_string(),
            };
            // The runtime's loopback plugin would do this: a pod reaches
            // its own address over lo.
            spec.netns.ip(&["link", "set", "lo", "up"]);
            let out = c.node.add_call(&spec).run();
            let ip = result_ip(out.ok());
            c.pods.insert(pod, (spec, ip));
        }
        c.write_cluster();
        let endpoints = c
            .pods
            .iter()
            .map(|(p, (spec, ip))| (*p, (spec.netns.path().to_path_buf(), *ip)))
            .collect();
        c.servers = Some(Servers::start(&endpoints));
        c
    }

    fn ip(&self, pod: P) -> Ipv4Addr {
        self.pods[&pod].1
    }

    /// Writes `name` atomically (write + rename), as the source expects.
    fn put(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write policy file");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename policy file");
    }

    /// Namespaces and pods as one `kind: List`, the way
    /// `kubectl get ns,pods -A -o yaml` prints them.
    fn write_cluster(&self) {
        let labels = |l: &Labels| {
            l.iter()
                .map(|(k, v)| format!("      {k}: {v}\n"))
                .collect::<String>()
        };
        let mut y = String::from(
            "apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n",
        );
        for (ns, l) in &self.ns_labels {
            write!(
                y,
                "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: {ns}\n    labels:\n{}      kubernetes.io/metadata.name: {ns}\n",
                labels(l)
            )
            .unwrap();
        }
        for (pod, (_, ip)) in &self.pods {
            write!(
                y,
                "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: {name}\n    namespace: {ns}\n    labels:\n{labels}  spec:\n    nodeName: node-1\n    containers:\n    - name: server\n      image: agnhost\n      ports:\n      - {{name: web, containerPort: {web}, protocol: TCP}}\n      - {{name: dns, containerPort: {dns}, protocol: UDP}}\n  status:\n    phase: Running\n    podIP: {ip}\n    podIPs:\n    - ip: {ip}\n",
                name = pod.pod,
                ns = pod.ns,
                labels = labels(&self.pod_labels[pod]),
                web = web_port(*pod),
                dns = dns_port(*pod),
            )
            .unwrap();
        }
        self.put("cluster.yaml", &y);
    }

    fn set_policies(&self, yaml: &str) {
        self.put("policies.yaml", yaml);
    }

    fn clear_policies(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("policies.yaml"));
    }

    fn probe_all(&self) -> Table {
        let handles: Vec<(Probe, JoinHandle<bool>)> = all_probes()
            .into_iter()
            .map(|pr| {
                let from = self.pods[&pr.from].0.netns.path();
                (pr, probe_from(from, self.ip(pr.to), pr.port, pr.proto))
            })
            .collect();
        handles
            .into_iter()
            .map(|(pr, h)| (pr, h.join().unwrap_or(false)))
            .collect()
    }

    /// Waits until the probed table equals `expect` (a pod always reaches
    /// itself: that traffic never leaves its namespace) in two rounds
    /// [`SETTLE`] apart. Returns a report of the differences, if any.
    fn check(&self, case: &str, expect: impl Fn(&Probe) -> bool) -> Result<(), String> {
        let expected: Table = all_probes()
            .into_iter()
            .map(|pr| (pr, pr.from == pr.to || expect(&pr)))
            .collect();
        let deadline = Instant::now() + CONVERGE;
        let mut matched = false;
        loop {
            let got = self.probe_all();
            if got == expected {
                if matched {
                    eprintln!("case {case:?}: ok");
                    return Ok(());
                }
                // Maybe the previous case's table by coincidence: look
                // again once the new input is surely in force.
                matched = true;
                thread::sleep(SETTLE);
                continue;
            }
            matched = false;
            if Instant::now() > deadline {
                return Err(format!("case {case:?}:\n{}", diff(&expected, &got)));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// A TCP probe from the node's own namespace to `to` on port 80.
    fn node_reaches(&self, to: P) -> bool {
        probe_from(self.node.netns().path(), self.ip(to), 80, Tcp)
            .join()
            .unwrap_or(false)
    }
}

/// Mismatching cells, then the whole probed table as grids (rows: from,
/// columns: to; `.` allowed, `X` denied, `!` where it differs).
fn diff(expected: &Table, got: &Table) -> String {
    let mut s = String::new();
    for (pr, want) in expected {
        let have = got[pr];
        if have != *want {
            writeln!(
                s,
                "  {} -> {} {:?}/{}: expected {}, got {}",
                pr.from,
                pr.to,
                pr.proto,
                pr.port,
                if *want { "allow" } else { "deny" },
                if have { "allow" } else { "deny" }
            )
            .unwrap();
        }
    }
    for port in PORTS {
        for proto in [Tcp, Udp] {
            let head: String = all_pods()
                .map(|p| format!("{:<4}", p.to_string()))
                .collect();
            writeln!(s, "  {:<8}{head}", format!("{proto:?}/{port}")).unwrap();
            for from in all_pods() {
                let row: String = all_pods()
                    .map(|to| {
                        let pr = Probe {
                            from,
                            to,
                            port,
                            proto,
                        };
                        match (got[&pr], expected[&pr]) {
                            (a, b) if a != b => "!   ",
                            (true, _) => ".   ",
                            (false, _) => "X   ",
                        }
                    })
                    .collect();
                writeln!(s, "  {:<8}{row}", from.to_string()).unwrap();
            }
        }
    }
    s
}

/// A NetworkPolicy document; `spec` is YAML indented by two spaces.
fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}\n"
    )
}

type Expect = Box<dyn Fn(&Probe) -> bool>;

/// Independent cases: each replaces the whole policy file.
fn cases(c: &Cluster) -> Vec<(&'static str, String, Expect)> {
    let yb = c.ip(YB);
    vec![
        ("no policy: everything open", String::new(), Box::new(|_: &Probe| true)),
        (
            "empty podSelector: deny all ingress in x",
            np("x", "deny", "  podSelector: {}\n  policyTypes: [Ingress]"),
            Box::new(|pr: &Probe| pr.to.ns != "x"),
        ),
        (
            "matchLabels podSelector: deny ingress to x/a only",
            np("x", "deny-a", "  podSelector: {matchLabels: {pod: a}}"),
            Box::new(|pr: &Probe| pr.to != XA),
        ),
        (
            "podSelector peer: x/a from x/b (own namespace only)",
            np(
                "x",
                "from-b",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}",
            ),
            Box::new(|pr: &Probe| pr.to != XA || pr.from == XB),
        ),
        (
            "namespaceSelector peer: x/a from every pod of y",
            np(
                "x",
                "from-y",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}",
            ),
            Box::new(|pr: &Probe| pr.to != XA || pr.from.ns == "y"),
        ),
        (
            "namespaceSelector AND podSelector in one peer: x/a from y/b",
            np(
                "x",
                "from-y-b",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}",
            ),
            Box::new(|pr: &Probe| pr.to != XA || pr.from == YB),
        ),
        (
            "namespaceSelector OR podSelector as two peers: x/a from y/* or x/b",
            np(
                "x",
                "from-y-or-b",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    - podSelector: {matchLabels: {pod: b}}",
            ),
            Box::new(|pr: &Probe| pr.to != XA || pr.from.ns == "y" || pr.from == XB),
        ),
        (
            "matchExpressions In / NotIn",
            np(
                "x",
                "exprs",
                "  podSelector:\n    matchExpressions: [{key: pod, operator: In, values: [a]}]\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: ns, operator: NotIn, values: [x]}]\n      podSelector:\n        matchExpressions: [{key: pod, operator: In, values: [a, b]}]",
            ),
            Box::new(|pr: &Probe| pr.to != XA || (pr.from.ns != "x" && pr.from.pod != "c")),
        ),
        (
            "matchExpressions Exists / DoesNotExist",
            np(
                "y",
                "exists",
                "  podSelector:\n    matchExpressions: [{key: pod, operator: Exists}]\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: env, operator: DoesNotExist}]",
            ),
            Box::new(|pr: &Probe| pr.to.ns != "y" || pr.from.ns == "x"),
        ),
        (
            "ipBlock with except: x/a from everywhere but y/b",
            np(
                "x",
                "block",
                &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - ipBlock:\n        cidr: 0.0.0.0/0\n        except: [{yb}/32]"),
            ),
            Box::new(|pr: &Probe| pr.to != XA || pr.from != YB),
        ),
        (
            "numeric port, protocol defaults to TCP",
            np("x", "tcp-80", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 80}]"),
            Box::new(|pr: &Probe| pr.to != XA || (pr.proto == Tcp && pr.port == 80)),
        ),
        (
            "UDP port",
            np(
                "x",
                "udp-81",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 81, protocol: UDP}]",
            ),
            Box::new(|pr: &Probe| pr.to != XA || (pr.proto == Udp && pr.port == 81)),
        ),
        (
            "endPort ranges",
            np(
                "x",
                "ranges",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 79, endPort: 80, protocol: TCP}\n    - {port: 81, endPort: 90, protocol: UDP}",
            ),
            Box::new(|pr: &Probe| {
                pr.to != XA || (pr.proto, pr.port) == (Tcp, 80) || (pr.proto, pr.port) == (Udp, 81)
            }),
        ),
        (
            "protocol without port: every UDP port",
            np("x", "all-udp", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{protocol: UDP}]"),
            Box::new(|pr: &Probe| pr.to != XA || pr.proto == Udp),
        ),
        (
            "SCTP port opens neither TCP nor UDP",
            np(
                "x",
                "sctp",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 80, protocol: SCTP}]",
            ),
            Box::new(|pr: &Probe| pr.to != XA),
        ),
        (
            "named ports on ingress resolve on each destination pod",
            np(
                "x",
                "named-in",
                "  podSelector: {}\n  ingress:\n  - ports:\n    - port: web\n    - {port: dns, protocol: UDP}\n    - {port: dns, protocol: TCP}",
            ),
            Box::new(|pr: &Probe| {
                pr.to.ns != "x"
                    || (pr.proto == Tcp && pr.port == web_port(pr.to))
                    || (pr.proto == Udp && pr.port == dns_port(pr.to))
            }),
        ),
        (
            "deny all egress from x",
            np("x", "deny-out", "  podSelector: {}\n  policyTypes: [Egress]"),
            Box::new(|pr: &Probe| pr.from.ns != "x"),
        ),
        (
            "named port on egress resolves on each peer",
            np(
                "x",
                "named-out",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}}]\n    ports: [{port: web}]",
            ),
            Box::new(|pr: &Probe| pr.from != XA || (pr.proto == Tcp && pr.port == web_port(pr.to))),
        ),
        (
            "egress rules without policyTypes isolate both directions",
            np(
                "x",
                "out-only",
                "  podSelector: {matchLabels: {pod: a}}\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]\n    ports: [{port: 80}]",
            ),
            Box::new(|pr: &Probe| {
                pr.to != XA
                    && (pr.from != XA || (pr.to.ns == "y" && pr.proto == Tcp && pr.port == 80))
            }),
        ),
        (
            "policyTypes [Egress] leaves ingress rules inert",
            np(
                "x",
                "egress-typed",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n  egress:\n  - to: [{podSelector: {}}]",
            ),
            Box::new(|pr: &Probe| pr.from != XA || pr.to.ns == "x"),
        ),
        (
            "ingress and egress together",
            np(
                "x",
                "both",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {ns: z}}}]",
            ),
            Box::new(|pr: &Probe| (pr.to != XA || pr.from == XB) && (pr.from != XA || pr.to.ns == "z")),
        ),
        (
            "several policies combine as a union (one kind: List)",
            format!(
                "apiVersion: v1\nkind: List\nitems:\n{}",
                [
                    np("x", "deny", "  podSelector: {}"),
                    np(
                        "x",
                        "a-from-y-80",
                        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n    ports: [{port: 80}]",
                    ),
                    np(
                        "x",
                        "a-from-zc",
                        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: c}}}]",
                    ),
                    np("z", "deny-b", "  podSelector: {matchLabels: {pod: b}}"),
                ]
                .iter()
                .map(|d| {
                    // Each document as a list item.
                    let body = d.trim_start_matches("---\n");
                    let mut lines = body.lines();
                    let first = lines.next().unwrap_or_default();
                    std::iter::once(format!("- {first}"))
                        .chain(lines.map(|l| format!("  {l}")))
                        .collect::<Vec<_>>()
                        .join("\n")
                        + "\n"
                })
                .collect::<String>()
            ),
            Box::new(|pr: &Probe| {
                if pr.to.ns == "x" {
                    pr.to == XA
                        && ((pr.from.ns == "y" && pr.proto == Tcp && pr.port == 80) || pr.from == ZC)
                } else {
                    pr.to != ZB
                }
            }),
        ),
    ]
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn netpol_truth_tables() {
    let mut c = Cluster::new();
    let mut failures = Vec::new();
    let mut record = |r: Result<(), String>| {
        if let Err(e) = r {
            eprintln!("{e}");
            failures.push(e);
        }
    };

    for (name, yaml, expect) in cases(&c) {
        if yaml.is_empty() {
            c.clear_policies();
        } else {
            c.set_policies(&yaml);
        }
        record(c.check(name, expect));
        if name.starts_with("empty podSelector") {
            // Kubelet's probes come from the node: they stay allowed.
            for to in all_pods() {
                if !c.node_reaches(to) {
                    record(Err(format!("node -> {to} denied under default deny")));
                }
            }
        }
    }

    // One policy added, changed, then deleted.
    let pol = |from: &str| {
        np(
            "x",
            "lifecycle",
            &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{from}]"),
        )
    };
    c.set_policies(&pol("{podSelector: {matchLabels: {pod: b}}}"));
    record(c.check("lifecycle: added", |pr| pr.to != XA || pr.from == XB));
    c.set_policies(&pol("{namespaceSelector: {matchLabels: {ns: z}}}"));
    record(c.check("lifecycle: changed", |pr| pr.to != XA || pr.from.ns == "z"));
    c.clear_policies();
    record(c.check("lifecycle: deleted", |_| true));

    // Pod label changes move pods into and out of selection, as peers and
    // as targets.
    c.set_policies(&(np(
        "x",
        "from-clients",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]",
    ) + &np("x", "isolate", "  podSelector: {matchLabels: {isolated: here}}")));
    record(c.check("pod labels: no client yet", |pr| pr.to != XA));
    c.pod_labels.get_mut(&YC).unwrap().insert("role", "client");
    c.write_cluster();
    record(c.check("pod labels: y/c becomes a client", |pr| {
        pr.to != XA || pr.from == YC
    }));
    c.pod_labels
        .get_mut(&XB)
        .unwrap()
        .insert("isolated", "here");
    c.write_cluster();
    record(c.check("pod labels: x/b becomes isolated", |pr| {
        pr.to != XB && (pr.to != XA || pr.from == YC)
    }));
    c.pod_labels.get_mut(&YC).unwrap().remove("role");
    c.pod_labels.get_mut(&XB).unwrap().remove("isolated");
    c.write_cluster();
    record(c.check("pod labels: both labels removed", |pr| pr.to != XA));

    // Namespace label changes do the same for namespaceSelector.
    c.set_policies(&np(
        "x",
        "from-blue",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: blue}}}]",
    ));
    record(c.check("namespace labels: no blue namespace", |pr| pr.to != XA));
    c.ns_labels.get_mut("z").unwrap().insert("team", "blue");
    c.write_cluster();
    record(c.check("namespace labels: z turns blue", |pr| {
        pr.to != XA || pr.from.ns == "z"
    }));
    c.ns_labels.get_mut("z").unwrap().remove("team");
    c.ns_labels.get_mut("y").unwrap().insert("team", "blue");
    c.write_cluster();
    record(c.check("namespace labels: blue moves from z to y", |pr| {
        pr.to != XA || pr.from.ns == "y"
    }));

    // A policy file that does not parse changes nothing.
    c.set_policies("kind: NetworkPolicy\nmetadata: {name: broken\n");
    record(c.check("broken policy file: previous policies stay", |pr| {
        pr.to != XA || pr.from.ns == "y"
    }));

    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
