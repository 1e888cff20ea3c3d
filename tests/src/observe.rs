//! Looking at a node the way Prometheus and kubelet's probes do: an HTTP
//! GET over loopback inside the node's namespace ([`http_get`]), and a
//! parser for the exposition text ([`Exposition`]).
//!
//! The parser is strict on purpose: every non-comment line must be
//! `name{labels} value`, label values must be properly quoted and escaped,
//! and the OpenMetrics `# EOF` must end the text — a malformed scrape fails
//! the test instead of being half-read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use crate::Node;

/// ipamd's default metrics port (`VPC_CNI_METRICS_ADDR=:61678`).
pub const METRICS_PORT: u16 = 61678;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// `content-type`, if sent.
    pub content_type: Option<String>,
    /// The body.
    pub body: String,
}

/// `GET path` from inside the node's namespace to `127.0.0.1:port`
/// (loopback is brought up first: `ip netns add` leaves it down). A thread
/// enters the namespace, so the test's own thread never moves. `Err` when
/// nothing listens or the answer is not HTTP.
pub fn http_get(node: &Node, port: u16, path: &str) -> Result<HttpAnswer, String> {
    request(node, port, "GET", path)
}

/// Like [`http_get`] with any method.
pub fn request(node: &Node, port: u16, method: &str, path: &str) -> Result<HttpAnswer, String> {
    node.netns().ip(&["link", "set", "lo", "up"]);
    let ns: PathBuf = node.netns().path().to_path_buf();
    let line = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    thread::spawn(move || -> Result<HttpAnswer, String> {
        let f = File::open(&ns).map_err(|e| format!("open {}: {e}", ns.display()))?;
        setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.write_all(line.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
        parse_http(&raw)
    })
    .join()
    .unwrap_or_else(|_| Err("HTTP client thread panicked".into()))
}

fn parse_http(raw: &[u8]) -> Result<HttpAnswer, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_type = None;
    let mut length = None;
    for h in lines {
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = Some(v.trim().to_string()),
                "content-length" => length = v.trim().parse::<usize>().ok(),
                _ => {}
            }
        }
    }
    if let Some(n) = length {
        if body.len() != n {
            return Err(format!(
                "content-length {n} but {} bytes of body",
                body.len()
            ));
        }
    }
    Ok(HttpAnswer {
        status,
        content_type,
        body: body.to_string(),
    })
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as exposed (with `_total`, `_bucket`, ... suffixes).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// `# TYPE` of each family.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses the OpenMetrics/Prometheus text format.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        let mut eof = false;
        for (n, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            if eof {
                return Err(at("content after # EOF".into()));
            }
            if line == "# EOF" {
                eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("TYPE without a type".into()))?;
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            samples.push(parse_sample(line).map_err(at)?);
        }
        if !eof {
            return Err("the exposition does not end with # EOF".into());
        }
        Ok(Self { samples, types })
    }

    /// The value of the sample `name` whose labels include all of `labels`;
    /// `Err` if none or several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        match found.as_slice() {
            [one] => Ok(one.value),
            [] => Err(format!("no sample {name}{labels:?}")),
            many => Err(format!("{} samples match {name}{labels:?}", many.len())),
        }
    }

    /// Like [`Self::value`], panicking with the whole list of names.
    #[track_caller]
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|e| {
            let names: std::collections::BTreeSet<&str> =
                self.samples.iter().map(|s| s.name.as_str()).collect();
            panic!("{e}; exposed: {names:?}")
        })
    }

    /// The sum over samples `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            let Some(&(i, c)) = chars.peek() else {
                return Err("unterminated labels".into());
            };
            if c == '}' {
                break i + 1;
            }
            if c == ',' {
                chars.next();
                continue;
            }
            let mut key = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c == '=' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            if chars.next().map(|x| x.1) != Some('=') || chars.next().map(|x| x.1) != Some('"') {
                return Err(format!("label {key:?} without =\"value\""));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            if labels.insert(key.clone(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
        };
        rest = &after[end..];
    }
    let value_text = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ')
        .next()
        .unwrap_or("");
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|e| format!("bad value {v:?}: {e}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_labels_and_escapes() {
        let text = "# HELP a_total x.\n# TYPE a counter\na_total{op=\"x\",msg=\"q\\\"\\n\"} 3\nb 1.5\nc_bucket{le=\"+Inf\"} 2\n# EOF\n";
        let e = Exposition::parse(text).unwrap();
        assert_eq!(e.get("a_total", &[("op", "x")]), 3.0);
        assert_eq!(
            e.samples[0].labels.get("msg").map(String::as_str),
            Some("q\"\n")
        );
        assert_eq!(e.get("b", &[]), 1.5);
        assert_eq!(e.types.get("a").map(String::as_str), Some("counter"));
        assert_eq!(e.sum("c_bucket", &[]), 2.0);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "a 1\n",                         // no EOF
            "a{x=\"1} 1\n# EOF\n",           // unterminated
            "a{x=1} 1\n# EOF\n",             // unquoted
            "a one\n# EOF\n",                // not a number
            "# EOF\na 1\n",                  // after EOF
            "a{x=\"1\",x=\"2\"} 1\n# EOF\n", // twice
        ] {
            assert!(Exposition::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http_answers_are_checked() {
        let ok = parse_http(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-type: text/plain\r\n\r\nok\n",
        )
        .unwrap();
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body, "ok\n");
        assert!(parse_http(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nok\n").is_err());
    }
}
