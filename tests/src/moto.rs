//! A real moto server on 127.0.0.1 and a tiny EC2 Query client for the
//! tests' own set-up and checks (the SDK stays out of the testkit: ipamd's
//! `ec2` provider is what is under test).
//!
//! moto 5.2 quirks the helpers respect (see the project's machine facts):
//! secondary addresses are random, so VPCs are large and tests ask for few;
//! asking for more addresses than a subnet holds hangs moto, so never do.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::TempDir;

/// EC2 API version of the Query protocol.
const VERSION: &str = "2016-11-15";
/// How long moto may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A moto server of this test process, killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    _dir: TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl Moto {
    /// Starts `moto_server` on 127.0.0.1 on a free port, with an environment
    /// holding nothing of the caller's AWS settings, and waits until it answers.
    pub fn start() -> Self {
        for _ in 0..3 {
            let dir = TempDir::new();
            let port = free_port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn moto_server (scripts/setup.sh installs moto[server])");
            let mut moto = Moto {
                child,
                port,
                _dir: dir,
            };
            let deadline = Instant::now() + START_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = moto.child.try_wait() {
                    break; // the port was taken in between: try another
                }
                if http(moto.addr(), "POST", "/moto-api/reset", "", &[]).is_ok() {
                    return moto;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("moto_server did not start");
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub fn reset(&self) {
        http(self.addr(), "POST", "/moto-api/reset", "", &[]).expect("moto reset");
    }

    /// One EC2 Query call; the XML answer, or the error document.
    pub fn ec2(&self, action: &str, params: &[(&str, String)]) -> Result<String, String> {
        query(self.addr(), action, params)
    }
}

/// Creates a detached ENI in `subnet` tagged as ipamd tags its own (cluster,
/// node and, when given, creation time), as a crash between create and
/// attach would leave it; returns its id.
pub fn create_tagged_eni(
    addr: SocketAddr,
    subnet: &str,
    cluster: &str,
    instance: &str,
    created_at: Option<&str>,
) -> String {
    let mut tags = vec![
        ("cluster.k8s.amazonaws.com/name", cluster),
        ("node.k8s.amazonaws.com/instance_id", instance),
    ];
    tags.extend(created_at.map(|c| ("node.k8s.amazonaws.com/createdAt", c)));
    let mut params = vec![
        ("SubnetId".to_string(), subnet.to_string()),
        (
            "TagSpecification.1.ResourceType".to_string(),
            "network-interface".to_string(),
        ),
    ];
    for (i, (k, v)) in tags.into_iter().enumerate() {
        let n = i + 1;
        params.push((format!("TagSpecification.1.Tag.{n}.Key"), k.to_string()));
        params.push((format!("TagSpecification.1.Tag.{n}.Value"), v.to_string()));
    }
    let params: Vec<(&str, String)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let xml = query(addr, "CreateNetworkInterface", &params).expect("create a tagged ENI");
    first_text(&xml, "networkInterfaceId").expect("ENI id")
}

/// One EC2 Query call to the moto at `addr` (for fixture threads that hold
/// only the address); the XML answer, or the error document.
pub fn query(addr: SocketAddr, action: &str, params: &[(&str, String)]) -> Result<String, String> {
    let mut body = format!("Action={action}&Version={VERSION}");
    for (k, v) in params {
        body.push('&');
        body.push_str(&encode(k));
        body.push('=');
        body.push_str(&encode(v));
    }
    let (status, text) = http(
            addr,
            "POST",
            "/",
            &body,
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                // moto reads the account from the key id; the same as ipamd's.
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
                ),
            ],
        )
        .map_err(|e| format!("{action}: {e}"))?;
    if status == 200 {
        Ok(text)
    } else {
        Err(format!("{action}: HTTP {status}: {text}"))
    }
}

impl Moto {
    /// [`Moto::ec2`], panicking on failure.
    #[track_caller]
    pub fn call(&self, action: &str, params: &[(&str, String)]) -> String {
        self.ec2(action, params).unwrap_or_else(|e| panic!("{e}"))
    }

    /// ENIs matching `filters` (`[("attachment.instance-id", id)]`).
    pub fn enis(&self, filters: &[(&str, &str)]) -> Vec<MotoEni> {
        let mut params = Vec::new();
        for (i, (name, value)) in filters.iter().enumerate() {
            params.push((leak(format!("Filter.{}.Name", i + 1)), name.to_string()));
            params.push((leak(format!("Filter.{}.Value.1", i + 1)), value.to_string()));
        }
        let xml = self.call("DescribeNetworkInterfaces", &params);
        parse_enis(&xml)
    }

    /// One ENI by id.
    pub fn eni(&self, id: &str) -> Option<MotoEni> {
        let xml = self
            .ec2(
                "DescribeNetworkInterfaces",
                &[("NetworkInterfaceId.1", id.to_string())],
            )
            .ok()?;
        parse_enis(&xml).into_iter().next()
    }
}

fn leak(s: String) -> &'static str {
    // Test-only: a handful of filter names per call.
    Box::leak(s.into_boxed_str())
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A minimal HTTP/1.1 request with `Connection: close`; (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        },
    ))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// An ENI as moto describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MotoEni {
    /// `eni-...`.
    pub id: String,
    /// Lower-case MAC.
    pub mac: String,
    /// `in-use` or `available`.
    pub status: String,
    /// Subnet.
    pub subnet_id: String,
    /// VPC.
    pub vpc_id: String,
    /// Primary private address.
    pub primary_ip: Ipv4Addr,
    /// Secondary private addresses.
    pub secondary: Vec<Ipv4Addr>,
    /// Delegated /28 prefixes.
    pub prefixes: Vec<String>,
    /// Security groups.
    pub groups: Vec<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// The instance it is attached to, if any.
    pub instance_id: Option<String>,
    /// Its device index, if attached.
    pub device_index: Option<u32>,
    /// Its attachment, if attached.
    pub attachment_id: Option<String>,
}

impl MotoEni {
    /// Every address it holds, primary first.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        let mut all = vec![self.primary_ip];
        all.extend(&self.secondary);
        all
    }

    /// A tag's value.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The text of `node`'s direct child element `name`.
pub fn child_text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
        .and_then(|c| c.text())
}

/// The first element named `name` anywhere in `xml`, as text.
pub fn first_text(xml: &str, name: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.descendants()
        .find(|n| n.is_element() && n.tag_name().name() == name)
        .and_then(|n| n.text())
        .map(str::to_string)
}

fn items<'a>(node: roxmltree::Node<'a, 'a>, set: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == set)
        .map(|s| {
            s.children()
                .filter(|c| c.is_element() && c.tag_name().name() == "item")
                .collect()
        })
        .unwrap_or_default()
}

/// The ENIs of a DescribeNetworkInterfaces answer.
pub fn parse_enis(xml: &str) -> Vec<MotoEni> {
    let doc = roxmltree::Document::parse(xml).expect("moto answers XML");
    let Some(set) = doc
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "networkInterfaceSet")
    else {
        return Vec::new();
    };
    set.children()
        .filter(|c| c.is_element() && c.tag_name().name() == "item")
        .map(|ni| {
            let text = |n: &str| child_text(ni, n).unwrap_or("").to_string();
            let primary_ip: Ipv4Addr = text("privateIpAddress").parse().expect("ENI address");
            let secondary = items(ni, "privateIpAddressesSet")
                .into_iter()
                .filter(|i| child_text(*i, "primary") != Some("true"))
                .filter_map(|i| child_text(i, "privateIpAddress")?.parse().ok())
                .filter(|ip| *ip != primary_ip)
                .collect();
            let prefixes = items(ni, "ipv4PrefixSet")
                .into_iter()
                .filter_map(|i| child_text(i, "ipv4Prefix").map(str::to_string))
                .collect();
            let groups = items(ni, "groupSet")
                .into_iter()
                .filter_map(|i| child_text(i, "groupId").map(str::to_string))
                .collect();
            let tags = items(ni, "tagSet")
                .into_iter()
                .filter_map(|i| {
                    Some((
                        child_text(i, "key")?.to_string(),
                        child_text(i, "value").unwrap_or("").to_string(),
                    ))
                })
                .collect();
            let attachment = ni
                .children()
                .find(|c| c.is_element() && c.tag_name().name() == "attachment");
            let att = |n: &str| {
                attachment
                    .and_then(|a| child_text(a, n))
                    .map(str::to_string)
            };
            MotoEni {
                id: text("networkInterfaceId"),
                mac: text("macAddress").to_ascii_lowercase(),
                status: text("status"),
                subnet_id: text("subnetId"),
                vpc_id: text("vpcId"),
                primary_ip,
                secondary,
                prefixes,
                groups,
                tags,
                instance_id: att("instanceId").filter(|s| !s.is_empty()),
                device_index: att("deviceIndex").and_then(|d| d.parse().ok()),
                attachment_id: att("attachmentId").filter(|s| !s.is_empty()),
            }
        })
        .collect()
}

/// A VPC with one subnet and one security group in moto.
#[derive(Debug, Clone)]
pub struct MotoVpc {
    /// `vpc-...`.
    pub id: String,
    /// Its CIDR.
    pub cidr: String,
    /// `subnet-...`.
    pub subnet_id: String,
    /// The subnet's CIDR.
    pub subnet_cidr: String,
    /// `sg-...`.
    pub sg_id: String,
}

impl MotoVpc {
    /// Creates 10.0.0.0/16 with the subnet 10.0.0.0/17: large, because moto
    /// picks secondary addresses at random (few collisions in 32 768).
    pub fn create(moto: &Moto) -> Self {
        let cidr = "10.0.0.0/16".to_string();
        let subnet_cidr = "10.0.0.0/17".to_string();
        let xml = moto.call("CreateVpc", &[("CidrBlock", cidr.clone())]);
        let id = first_text(&xml, "vpcId").expect("vpcId");
        let xml = moto.call(
            "CreateSubnet",
            &[
                ("VpcId", id.clone()),
                ("CidrBlock", subnet_cidr.clone()),
                ("AvailabilityZone", "us-east-1a".into()),
            ],
        );
        let subnet_id = first_text(&xml, "subnetId").expect("subnetId");
        let xml = moto.call(
            "CreateSecurityGroup",
            &[
                ("GroupName", "nodes".into()),
                ("GroupDescription", "nodes".into()),
                ("VpcId", id.clone()),
            ],
        );
        let sg_id = first_text(&xml, "groupId").expect("groupId");
        MotoVpc {
            id,
            cidr,
            subnet_id,
            subnet_cidr,
            sg_id,
        }
    }

    /// Launches one instance of `instance_type` in the subnet; returns its
    /// id and its primary ENI.
    pub fn run_instance(&self, moto: &Moto, instance_type: &str) -> (String, MotoEni) {
        let xml = moto.call(
            "RunInstances",
            &[
                ("ImageId", "ami-12c6146b".into()),
                ("InstanceType", instance_type.into()),
                ("MinCount", "1".into()),
                ("MaxCount", "1".into()),
                ("SubnetId", self.subnet_id.clone()),
                ("SecurityGroupId.1", self.sg_id.clone()),
            ],
        );
        let id = first_text(&xml, "instanceId").expect("instanceId");
        let eni = moto
            .enis(&[("attachment.instance-id", &id)])
            .into_iter()
            .find(|e| e.device_index == Some(0))
            .expect("the instance's primary ENI");
        (id, eni)
    }
}
