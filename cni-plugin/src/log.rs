//! The plugin's log: one line per call, so an operator can line up kubelet's
//! events with ipamd's log without a logging framework in a binary that
//! must start fast.
//!
//! The line goes to `logFile` when the configuration names one (every call,
//! whatever `logLevel`: naming a file is the opt-in), else to stderr only at
//! `logLevel` `debug`, because runtimes copy a plugin's stderr into their own
//! logs. Never to stdout, which carries the CNI answer. Failing to log never
//! fails the call.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::LogLevel;
use crate::error::{CniError, TRY_AGAIN_LATER};
use crate::wire::PodArgs;

/// Where and how much to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logger {
    pub(crate) level: LogLevel,
    pub(crate) file: Option<PathBuf>,
}

/// What one call did.
#[derive(Debug)]
pub(crate) struct CallRecord<'a> {
    /// The raw `CNI_COMMAND`, which may be missing or unknown.
    pub(crate) command: &'a str,
    pub(crate) container_id: &'a str,
    pub(crate) netns: &'a str,
    pub(crate) ifname: &'a str,
    pub(crate) pod: &'a PodArgs,
    pub(crate) duration: Duration,
    pub(crate) outcome: Result<(), &'a CniError>,
}

impl Logger {
    /// Writes the record's line, ignoring every failure.
    pub(crate) fn record(&self, rec: &CallRecord<'_>) {
        let line = self.format(rec, SystemTime::now());
        if let Some(path) = &self.file {
            // One write of a whole line to an O_APPEND file: lines from
            // concurrent plugin processes do not interleave.
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = f.write_all(line.as_bytes());
            }
        } else if self.level >= LogLevel::Debug {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    /// The line for `rec`, newline included. Free-form values are quoted
    /// with Rust's escaping, so a message with a newline stays on one line.
    pub(crate) fn format(&self, rec: &CallRecord<'_>, now: SystemTime) -> String {
        let ts = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let level = match rec.outcome {
            Ok(()) => "info",
            Err(e) if e.code == TRY_AGAIN_LATER => "warn",
            Err(_) => "error",
        };
        let command = if rec.command.is_empty() {
            "-"
        } else {
            rec.command
        };
        let mut line = format!(
            "ts={}.{:03} level={level} plugin=vpc-cni cmd={command:?} container={:?}",
            ts.as_secs(),
            ts.subsec_millis(),
            rec.container_id,
        );
        if let Some(name) = &rec.pod.name {
            let ns = rec.pod.namespace.as_deref().unwrap_or("");
            line.push_str(&format!(" pod={:?}", format!("{ns}/{name}")));
        }
        if self.level >= LogLevel::Debug {
            line.push_str(&format!(" netns={:?} ifname={:?}", rec.netns, rec.ifname));
        }
        line.push_str(&format!(" dur_ms={}", rec.duration.as_millis()));
        match rec.outcome {
            Ok(()) => line.push_str(" result=ok"),
            Err(e) => {
                line.push_str(&format!(" result=error code={} msg={:?}", e.code, e.msg));
                if !e.details.is_empty() {
                    line.push_str(&format!(" details={:?}", e.details));
                }
            }
        }
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn pod() -> PodArgs {
        PodArgs {
            namespace: Some("default".into()),
            name: Some("web-0".into()),
            ..PodArgs::default()
        }
    }

    fn rec<'a>(pod: &'a PodArgs, outcome: Result<(), &'a CniError>) -> CallRecord<'a> {
        CallRecord {
            command: "ADD",
            container_id: "c1",
            netns: "/proc/1/ns/net",
            ifname: "eth0",
            pod,
            duration: Duration::from_millis(42),
            outcome,
        }
    }

    #[test]
    fn formats_success_and_failure_on_one_line() {
        let logger = Logger {
            level: LogLevel::Warn,
            file: None,
        };
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let pod = pod();
        let ok = logger.format(&rec(&pod, Ok(())), now);
        assert_eq!(
            ok,
            "ts=1700000000.123 level=info plugin=vpc-cni cmd=\"ADD\" container=\"c1\" pod=\"default/web-0\" dur_ms=42 result=ok\n"
        );
        let err = CniError::new(11, "ipamd is\nstarting").with_details("d");
        let line = logger.format(&rec(&pod, Err(&err)), now);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("level=warn"), "{line}");
        assert!(
            line.contains(r#"code=11 msg="ipamd is\nstarting" details="d""#),
            "{line}"
        );
        assert!(!line.contains("netns="));
    }

    #[test]
    fn debug_adds_netns_and_ifname() {
        let logger = Logger {
            level: LogLevel::Debug,
            file: None,
        };
        let pod = PodArgs::default();
        let line = logger.format(&rec(&pod, Ok(())), SystemTime::now());
        assert!(
            line.contains(r#"netns="/proc/1/ns/net" ifname="eth0""#),
            "{line}"
        );
        assert!(!line.contains("pod="));
    }

    #[test]
    fn appends_to_the_log_file() {
        let dir = TempDir::new();
        let path = dir.path().join("plugin.log");
        let logger = Logger {
            level: LogLevel::Error,
            file: Some(path.clone()),
        };
        let pod = pod();
        logger.record(&rec(&pod, Ok(())));
        let err = CniError::new(7, "bad");
        logger.record(&rec(&pod, Err(&err)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().nth(1).unwrap().contains("code=7"));
    }

    #[test]
    fn unwritable_log_file_is_ignored() {
        let logger = Logger {
            level: LogLevel::Debug,
            file: Some(PathBuf::from(
                "/nonexistent-dir-for-vpc-cni-test/x/plugin.log",
            )),
        };
        let pod = pod();
        logger.record(&rec(&pod, Ok(())));
    }
}
