//! Proving that wired pods can talk: a TCP exchange and an ICMP echo
//! between two network namespaces the demo made.
//!
//! TCP runs in-process on two throwaway threads, each moved into one
//! namespace with `setns(2)`; the main thread never changes namespace, and a
//! thread that did is never reused. ICMP runs `ping` under `ip netns exec`.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};

use super::node::Netns;

/// The port the listener takes in the target pod.
const PORT: u16 = 8080;
/// Bound on each wait: listener ready, connect, accept, read.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One end of a check.
pub struct Endpoint<'a> {
    /// How the end is shown (`shop/cart-0`, `node`).
    pub label: String,
    /// Its namespace.
    pub netns: &'a Netns,
    /// Its address (the pod IP; for the node, the primary ENI's IP).
    pub ip: Ipv4Addr,
}

/// How a check went.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It worked; what was seen.
    Pass(String),
    /// It did not; why.
    Fail(String),
    /// It could not be tried; why.
    Skipped(String),
}

/// Listens on `to.ip:8080` inside `to`'s namespace, connects from inside
/// `from`'s, sends one line and expects it echoed back with a prefix.
pub fn tcp(from: &Endpoint<'_>, to: &Endpoint<'_>) -> Verdict {
    let target = SocketAddrV4::new(to.ip, PORT);
    let (ready_tx, ready_rx) = mpsc::channel();
    let server_ns = to.netns.path();
    let server = thread::spawn(move || serve_once(&server_ns, target, &ready_tx));
    let ready = ready_rx
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| Err("listener did not start".into()));
    if let Err(e) = ready {
        let _ = server.join();
        return Verdict::Fail(format!("listen on {target} in {}: {e}", to.label));
    }
    let client_ns = from.netns.path();
    let greeting = format!("hello from {}", from.label);
    let started = Instant::now();
    let client = thread::spawn(move || ask(&client_ns, target, &greeting));
    let answer = client
        .join()
        .unwrap_or_else(|_| Err("client thread panicked".into()));
    let took = started.elapsed();
    let served = server
        .join()
        .unwrap_or_else(|_| Err("server thread panicked".into()));
    match (answer, served) {
        (Ok(reply), Ok(())) => Verdict::Pass(format!(
            "{target} answered {reply:?} in {}",
            super::render::ms(took)
        )),
        (Err(e), _) | (Ok(_), Err(e)) => Verdict::Fail(format!("{target}: {e}")),
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {}: {e}", path.display()))
}

/// Server thread: enter, listen, report readiness, answer one connection.
fn serve_once(
    netns: &Path,
    addr: SocketAddrV4,
    ready: &mpsc::Sender<Result<(), String>>,
) -> Result<(), String> {
    let listener = match enter(netns)
        .and_then(|()| TcpListener::bind(addr).map_err(|e| format!("bind: {e}")))
    {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let _ = ready.send(Ok(()));
    let mut stream = accept_within_timeout(&listener)?;
    let line = read_line(&stream)?;
    writeln!(stream, "{} says: {line}", addr.ip()).map_err(|e| format!("write: {e}"))
}

/// `accept` bounded by [`TIMEOUT`]: std's listener has no accept timeout,
/// but Linux applies `SO_RCVTIMEO` to `accept(2)`.
fn accept_within_timeout(listener: &TcpListener) -> Result<TcpStream, String> {
    let timeout = TimeVal::milliseconds(i64::try_from(TIMEOUT.as_millis()).unwrap_or(i64::MAX));
    setsockopt(listener, sockopt::ReceiveTimeout, &timeout)
        .map_err(|e| format!("listener timeout: {e}"))?;
    match listener.accept() {
        Ok((stream, _)) => Ok(stream),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err("no connection arrived".into())
        }
        Err(e) => Err(format!("accept: {e}")),
    }
}

/// Client thread: enter, connect, send `greeting`, return the reply line.
fn ask(netns: &Path, addr: SocketAddrV4, greeting: &str) -> Result<String, String> {
    enter(netns)?;
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(addr), TIMEOUT)
        .map_err(|e| format!("connect: {e}"))?;
    writeln!(stream, "{greeting}").map_err(|e| format!("send: {e}"))?;
    let reply = read_line(&stream)?;
    if reply.ends_with(greeting) {
        Ok(reply)
    } else {
        Err(format!("unexpected reply {reply:?}"))
    }
}

fn read_line(stream: &TcpStream) -> Result<String, String> {
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| format!("socket: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    Ok(line.trim_end().to_string())
}

/// `ip netns exec <from> ping -c1 -W2 <to>`.
pub fn icmp(from: &Endpoint<'_>, to: &Endpoint<'_>, have_ping: bool) -> Verdict {
    if !have_ping {
        return Verdict::Skipped("no ping on this machine".into());
    }
    let target = to.ip.to_string();
    let out = Command::new("ip")
        .args(["netns", "exec", from.netns.name(), "ping", "-c1", "-W2"])
        .arg(&target)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            Verdict::Pass(rtt(&String::from_utf8_lossy(&out.stdout)).map_or_else(
                || format!("{target} replied"),
                |t| format!("{target} replied in {t}"),
            ))
        }
        Ok(out) => Verdict::Fail(format!("{target}: {}", last_line(&out.stdout, &out.stderr))),
        Err(e) => Verdict::Fail(format!("cannot run ping: {e}")),
    }
}

/// The `time=0.205 ms` of ping's reply line.
fn rtt(stdout: &str) -> Option<String> {
    let at = stdout.find("time=")?;
    let rest = &stdout[at + 5..];
    let end = rest.find('\n').unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

fn last_line(stdout: &[u8], stderr: &[u8]) -> String {
    let text = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        stderr
    } else {
        stdout
    };
    String::from_utf8_lossy(text)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("no reply")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rtt_from_ping_output() {
        let out = "PING 10.0.0.5 (10.0.0.5) 56(84) bytes of data.\n\
                   64 bytes from 10.0.0.5: icmp_seq=1 ttl=64 time=0.205 ms\n\n--- stats ---\n";
        assert_eq!(rtt(out).as_deref(), Some("0.205 ms"));
        assert_eq!(rtt("nothing"), None);
    }

    #[test]
    fn failure_text_prefers_stderr() {
        assert_eq!(last_line(b"a\nb\n", b""), "b");
        assert_eq!(last_line(b"a\n", b"ping: oops\n"), "ping: oops");
    }
}
