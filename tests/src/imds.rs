//! What an EC2 instance sees, rebuilt around a moto server for one node
//! namespace: an IMDSv2 responder answering from moto's live state, a
//! loopback forwarder that puts moto on the node's own 127.0.0.1, and the
//! ENI fabric that makes each attached ENI appear in the node namespace as
//! the node end of a veth pair with the ENI's MAC.
//!
//! ipamd runs inside the node namespace, whose loopback is its own: the test
//! process binds the IMDS responder and the forwarder's listener inside it
//! (a socket stays in the namespace it was made in) and serves them from its
//! own threads, which talk to moto on the machine's loopback. Nothing leaves
//! loopback; ipamd carries no test hook: the fabric learns of attachments
//! by polling moto, as the instance's OS learns of them from the hypervisor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use crate::moto::{Moto, MotoEni, MotoVpc};
use crate::Netns;

/// Binds `127.0.0.1:0` inside `ns` (from a throwaway thread, so the caller
/// never changes namespace) and brings that namespace's loopback up.
pub fn bind_loopback_in(ns: &Netns) -> TcpListener {
    ns.ip(&["link", "set", "lo", "up"]);
    let path = ns.path().to_path_buf();
    thread::spawn(move || {
        let f = File::open(&path).expect("open the node namespace");
        setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
        TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 in the node namespace")
    })
    .join()
    .expect("bind thread")
}

/// Runs `serve` for every connection accepted on `listener` until `stop`.
fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    serve: impl Fn(TcpStream) + Send + Sync + 'static,
) -> JoinHandle<()> {
    listener.set_nonblocking(true).expect("nonblocking");
    let serve = Arc::new(serve);
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let serve = serve.clone();
                    thread::spawn(move || serve(s));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// A TCP forwarder from the node namespace's loopback to an address on the
/// machine's loopback. Stops on drop.
#[derive(Debug)]
pub struct Forward {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forward {
    /// Listens in `ns`, forwards to `target`.
    pub fn start(ns: &Netns, target: SocketAddr) -> Self {
        let listener = bind_loopback_in(ns);
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = accept_loop(listener, stop.clone(), move |inbound| {
            let Ok(outbound) = TcpStream::connect(target) else {
                return;
            };
            let (Ok(mut in2), Ok(mut out2)) = (inbound.try_clone(), outbound.try_clone()) else {
                return;
            };
            let (mut inbound, mut outbound) = (inbound, outbound);
            let up = thread::spawn(move || {
                let _ = std::io::copy(&mut in2, &mut out2);
                let _ = out2.shutdown(Shutdown::Write);
            });
            let _ = std::io::copy(&mut outbound, &mut inbound);
            let _ = inbound.shutdown(Shutdown::Write);
            let _ = up.join();
        });
        Forward {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>` as seen from inside the namespace.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The listening address, valid inside the namespace only.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What IMDS knows that moto's state does not say directly.
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    instance_type: String,
    vpc: MotoVpc,
}

/// An IMDSv2 responder for one instance, listening on the node namespace's
/// loopback and answering from moto's live state. Stops on drop.
#[derive(Debug)]
pub struct Imds {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const TOKEN: &str = "vpccni-test-token";

impl Imds {
    /// Serves instance `instance_id` (of `instance_type`, in `vpc`) inside `ns`.
    pub fn start(
        ns: &Netns,
        moto: SocketAddr,
        vpc: &MotoVpc,
        instance_id: &str,
        instance_type: &str,
    ) -> Self {
        let listener = bind_loopback_in(ns);
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let inst = Instance {
            id: instance_id.to_string(),
            instance_type: instance_type.to_string(),
            vpc: vpc.clone(),
        };
        let thread = accept_loop(listener, stop.clone(), move |s| {
            let _ = serve_imds(s, moto, &inst);
        });
        Imds {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>` as seen from inside the namespace.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request per connection (answers carry `Connection: close`).
fn serve_imds(stream: TcpStream, moto: SocketAddr, inst: &Instance) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = BTreeMap::new();
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                content_length = v.trim().parse().unwrap_or(0);
            }
            headers.insert(k, v.trim().to_string());
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let (status, extra, text) = if method == "PUT" && path == "/latest/api/token" {
        match headers.get("x-aws-ec2-metadata-token-ttl-seconds") {
            Some(ttl) => (
                200,
                format!("X-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n"),
                TOKEN.to_string(),
            ),
            None => (400, String::new(), "missing TTL".to_string()),
        }
    } else if headers.get("x-aws-ec2-metadata-token").map(String::as_str) != Some(TOKEN) {
        (401, String::new(), String::new())
    } else {
        match path
            .strip_prefix("/latest/meta-data/")
            .and_then(|p| metadata(p, moto, inst))
        {
            Some(text) => (200, String::new(), text),
            None => (404, String::new(), "Not Found".to_string()),
        }
    };
    let mut stream = stream;
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

/// The ENIs attached to `instance_id`, as moto says now.
fn attached(moto: SocketAddr, instance_id: &str) -> Result<Vec<MotoEni>, String> {
    let xml = crate::moto::query(
        moto,
        "DescribeNetworkInterfaces",
        &[
            ("Filter.1.Name", "attachment.instance-id".into()),
            ("Filter.1.Value.1", instance_id.to_string()),
        ],
    )?;
    Ok(crate::moto::parse_enis(&xml))
}

/// The answer for one metadata path, from moto's state now.
fn metadata(path: &str, moto: SocketAddr, inst: &Instance) -> Option<String> {
    let enis = || -> Option<Vec<MotoEni>> { attached(moto, &inst.id).ok() };
    let primary = || enis()?.into_iter().find(|e| e.device_index == Some(0));
    match path.trim_end_matches('/') {
        "instance-id" => Some(inst.id.clone()),
        "instance-type" => Some(inst.instance_type.clone()),
        "placement/region" => Some("us-east-1".into()),
        "placement/availability-zone" => Some("us-east-1a".into()),
        "local-ipv4" => Some(primary()?.primary_ip.to_string()),
        "mac" => Some(primary()?.mac),
        "network/interfaces/macs" => Some(
            enis()?
                .iter()
                .map(|e| format!("{}/", e.mac))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        p => {
            let rest = p.strip_prefix("network/interfaces/macs/")?;
            let (mac, key) = rest.split_once('/')?;
            let eni = enis()?.into_iter().find(|e| e.mac == mac)?;
            Some(match key {
                "interface-id" => eni.id,
                "device-number" => eni.device_index?.to_string(),
                "subnet-id" => eni.subnet_id,
                "vpc-id" => eni.vpc_id,
                "security-group-ids" => eni.groups.join("\n"),
                "local-ipv4s" => eni
                    .addresses()
                    .iter()
                    .map(Ipv4Addr::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                "ipv4-prefix" => eni.prefixes.join("\n"),
                "subnet-ipv4-cidr-block" => inst.vpc.subnet_cidr.clone(),
                "vpc-ipv4-cidr-block" | "vpc-ipv4-cidr-blocks" => inst.vpc.cidr.clone(),
                _ => return None,
            })
        }
    }
}

/// The VPC fabric seen by one node: each ENI attached to the instance in
/// moto appears in the node namespace as `eth<device index>` with the ENI's
/// MAC, the other end of the veth pair standing for the VPC (in the shared
/// `vpc` namespace if there is one, where every address the ENI holds is
/// routed to it). A detached ENI's link goes away. A thread polls moto every
/// 100 ms until the fabric is dropped.
#[derive(Debug)]
pub struct EniFabric {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
}

/// Where the far ends of the ENI links live.
#[derive(Debug, Clone)]
pub struct VpcSide {
    /// The `vpc` namespace's name.
    pub ns: String,
    /// A short tag unique per node, for link names there (≤ 6 chars).
    pub tag: String,
}

impl EniFabric {
    /// Sets up the primary ENI as the OS does at boot (`eth0` with its MAC,
    /// address/prefix, up, MTU 9001) and starts following attachments.
    pub fn start(
        moto: &Moto,
        network: &MotoVpc,
        instance_id: &str,
        node: &Netns,
        vpc: Option<VpcSide>,
    ) -> Self {
        let addr = moto.addr();
        let id = instance_id.to_string();
        let node_ns = node.name().to_string();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let subnet_prefix = network
            .subnet_cidr
            .split_once('/')
            .and_then(|(_, p)| p.parse().ok())
            .expect("subnet CIDR");
        let mut state = FabricState {
            node_ns,
            subnet_prefix,
            vpc,
            links: BTreeMap::new(),
        };
        // The primary ENI now, so ipamd starts on a booted node.
        let primary = moto
            .enis(&[("attachment.instance-id", instance_id)])
            .into_iter()
            .find(|e| e.device_index == Some(0))
            .expect("primary ENI");
        state.sync(&[primary]).expect("materialise the primary ENI");
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, errors2) = (stop.clone(), errors.clone());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(enis) = attached(addr, &id) {
                    if let Err(e) = state.sync(&enis) {
                        errors2.lock().expect("errors").push(e);
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        EniFabric {
            stop,
            thread: Some(thread),
            errors,
        }
    }

    /// What went wrong while following moto (for a failing test's message).
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("errors").clone()
    }
}

impl Drop for EniFabric {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct FabricState {
    node_ns: String,
    subnet_prefix: u8,
    vpc: Option<VpcSide>,
    /// device index → (MAC, addresses routed in the vpc namespace).
    links: BTreeMap<u32, (String, Vec<Ipv4Addr>)>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl FabricState {
    fn far_name(&self, index: u32) -> String {
        match &self.vpc {
            Some(v) => format!("{}e{index}", v.tag),
            None => format!("vpc{index}"),
        }
    }

    fn sync(&mut self, attached: &[MotoEni]) -> Result<(), String> {
        let now: BTreeMap<u32, &MotoEni> = attached
            .iter()
            .filter_map(|e| Some((e.device_index?, e)))
            .collect();
        // Detached (or replaced) ENIs: their link goes.
        let gone: Vec<u32> = self
            .links
            .iter()
            .filter(|(i, (mac, _))| now.get(i).is_none_or(|e| &e.mac != mac))
            .map(|(i, _)| *i)
            .collect();
        for index in gone {
            let (_, routed) = self.links.remove(&index).expect("listed");
            let name = format!("eth{index}");
            ip(&["-n", &self.node_ns, "link", "del", &name])?;
            if let Some(v) = &self.vpc {
                for a in routed {
                    let _ = ip(&["-n", &v.ns, "route", "del", &format!("{a}/32")]);
                }
            }
        }
        for (&index, eni) in &now {
            if !self.links.contains_key(&index) {
                self.create(index, eni)?;
                self.links.insert(index, (eni.mac.clone(), Vec::new()));
            }
            let Some(v) = self.vpc.clone() else {
                continue;
            };
            let far = self.far_name(index);
            let want = eni.addresses();
            let entry = self.links.get_mut(&index).expect("inserted");
            for a in entry.1.iter().filter(|a| !want.contains(a)) {
                let a = a.to_string();
                let _ = ip(&["-n", &v.ns, "neigh", "del", &a, "dev", &far]);
                let _ = ip(&["-n", &v.ns, "route", "del", &format!("{a}/32"), "dev", &far]);
            }
            for a in want.iter().filter(|a| !entry.1.contains(a)) {
                let a = a.to_string();
                ip(&[
                    "-n",
                    &v.ns,
                    "route",
                    "replace",
                    &format!("{a}/32"),
                    "dev",
                    &far,
                ])?;
                // The VPC delivers to the ENI that holds an address, by its
                // MAC, without asking (a node does not answer ARP for its
                // pods' addresses).
                ip(&[
                    "-n",
                    &v.ns,
                    "neigh",
                    "replace",
                    &a,
                    "lladdr",
                    &eni.mac,
                    "dev",
                    &far,
                    "nud",
                    "permanent",
                ])?;
            }
            entry.1 = want;
        }
        Ok(())
    }

    fn create(&self, index: u32, eni: &MotoEni) -> Result<(), String> {
        let node = format!("eth{index}");
        let far = self.far_name(index);
        let mut args = vec![
            "-n",
            &self.node_ns,
            "link",
            "add",
            &node,
            "address",
            &eni.mac,
            "mtu",
            "9001",
            "type",
            "veth",
            "peer",
            "name",
            &far,
        ];
        if let Some(v) = &self.vpc {
            args.extend(["netns", v.ns.as_str()]);
        }
        ip(&args)?;
        let far_ns = self
            .vpc
            .as_ref()
            .map_or(self.node_ns.as_str(), |v| v.ns.as_str());
        ip(&["-n", far_ns, "link", "set", &far, "mtu", "9001", "up"])?;
        if let Some(v) = &self.vpc {
            // The VPC answers ARP for every address it routes elsewhere.
            let sysctl = format!("net/ipv4/conf/{far}/proxy_arp");
            write_sysctl(&v.ns, &sysctl, "1")?;
        }
        if index == 0 {
            // What the OS does at boot for the primary ENI.
            let prefix = self.subnet_prefix;
            ip(&["-n", &self.node_ns, "link", "set", &node, "up"])?;
            ip(&[
                "-n",
                &self.node_ns,
                "addr",
                "add",
                &format!("{}/{prefix}", eni.primary_ip),
                "dev",
                &node,
            ])?;
        }
        Ok(())
    }
}

/// Writes `/proc/sys/<key>` inside namespace `ns`.
pub fn write_sysctl(ns: &str, key: &str, value: &str) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c"])
        .arg(format!("echo {value} > /proc/sys/{key}"))
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sysctl {key}={value} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
