//! The network configuration read from stdin, parsed into a [`NetConf`].
//!
//! Only the keys the plugin itself needs are typed here; the whole object is
//! kept as [`NetConf::raw`] and forwarded to ipamd, which reads what it needs
//! (`prevResult`, `runtimeConfig`, `cni.dev/valid-attachments`, ...).
//! Unknown keys are allowed, because runtimes and chaining add their own.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{CniError, DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_NETWORK_CONFIG};
use crate::result::{CURRENT_VERSION, SUPPORTED_VERSIONS};

/// Where ipamd listens unless `ipamdSocket` says otherwise.
pub const DEFAULT_IPAMD_SOCKET: &str = "/run/vpc-cni/ipamd.sock";
/// The default pod MTU: the VPC's jumbo-frame MTU.
pub const DEFAULT_MTU: u32 = 9001;
/// The smallest `mtu` accepted: the IPv4 minimum datagram every host must take.
pub const MIN_MTU: u32 = 576;
/// The largest `mtu` accepted: nothing larger crosses a VPC.
pub const MAX_MTU: u32 = 9001;
/// The longest `timeoutMs` accepted: one hour, far beyond any runtime's own
/// timeout, and far from overflowing a deadline.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// How long the plugin waits for ipamd unless `timeoutMs` says otherwise.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The version to answer in when stdin gave none that is usable.
pub const FALLBACK_VERSION: &str = CURRENT_VERSION;

/// How much the plugin logs (`logLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LogLevel {
    /// Action needed.
    Error,
    /// Degraded (the default).
    #[default]
    Warn,
    /// Lifecycle.
    Info,
    /// Per request.
    Debug,
}

impl LogLevel {
    /// Parses `error`, `warn`, `info` or `debug`, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Error, Self::Warn, Self::Info, Self::Debug]
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// The plugin's view of its network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`, always one of [`SUPPORTED_VERSIONS`].
    pub cni_version: String,
    /// `name` of the network.
    pub name: String,
    /// `type`, normally `vpc-cni`; not checked, since the runtime chose
    /// this binary by it.
    pub plugin_type: Option<String>,
    /// `ipamdSocket`, an absolute path.
    pub ipamd_socket: PathBuf,
    /// `mtu`, in [`MIN_MTU`]`..=`[`MAX_MTU`].
    pub mtu: u32,
    /// `timeoutMs`, positive.
    pub timeout_ms: u64,
    /// `logLevel`.
    pub log_level: LogLevel,
    /// `logFile`; `None` when absent or empty.
    pub log_file: Option<PathBuf>,
    /// The whole object as read, forwarded to ipamd.
    pub raw: Value,
}

/// Decodes stdin as JSON. Anything that is not a JSON object is code 6
/// ([`DECODE_FAILURE`]).
pub fn decode(stdin: &[u8]) -> Result<Value, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            DECODE_FAILURE,
            "network configuration on stdin is not valid JSON",
        )
        .with_details(e.to_string())
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(CniError::new(
            DECODE_FAILURE,
            "network configuration on stdin is not a JSON object",
        ))
    }
}

/// Decodes and validates stdin in one step; see [`decode`] and
/// [`NetConf::from_value`].
pub fn parse_netconf(stdin: &[u8]) -> Result<NetConf, CniError> {
    NetConf::from_value(decode(stdin)?)
}

impl NetConf {
    /// Validates a decoded configuration. Checks run in this order, so the
    /// caller gets the most fundamental problem first: not an object (6),
    /// `cniVersion` missing or not a string (7), unsupported version (1),
    /// then `name` and the optional keys (7).
    ///
    /// An optional key set to `null` counts as absent: templating tools
    /// write `null` for unset values.
    pub fn from_value(raw: Value) -> Result<NetConf, CniError> {
        let Some(obj) = raw.as_object() else {
            return Err(CniError::new(
                DECODE_FAILURE,
                "network configuration on stdin is not a JSON object",
            ));
        };
        let cni_version = match obj.get("cniVersion") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid("cniVersion", "must be a string")),
            None => return Err(invalid("cniVersion", "is missing")),
        };
        check_supported(&cni_version)?;
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(invalid("name", "must not be empty")),
            Some(_) => return Err(invalid("name", "must be a string")),
            None => return Err(invalid("name", "is missing")),
        };
        let plugin_type = optional_string(obj, "type")?;

        let ipamd_socket = match optional_string(obj, "ipamdSocket")? {
            None => PathBuf::from(DEFAULT_IPAMD_SOCKET),
            Some(s) if Path::new(&s).is_absolute() => PathBuf::from(s),
            Some(s) => {
                return Err(invalid(
                    "ipamdSocket",
                    &format!("must be an absolute path, got {s:?}"),
                ))
            }
        };
        let mtu = match optional(obj, "mtu") {
            None => DEFAULT_MTU,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (MIN_MTU..=MAX_MTU).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "mtu",
                        &format!("must be an integer from {MIN_MTU} to {MAX_MTU}, got {v}"),
                    )
                })?,
        };
        let timeout_ms = match optional(obj, "timeoutMs") {
            None => DEFAULT_TIMEOUT_MS,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_TIMEOUT_MS).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "timeoutMs",
                        &format!("must be an integer from 1 to {MAX_TIMEOUT_MS}, got {v}"),
                    )
                })?,
        };
        let log_level = match optional_string(obj, "logLevel")? {
            None => LogLevel::default(),
            Some(s) => LogLevel::parse(&s).ok_or_else(|| {
                invalid(
                    "logLevel",
                    &format!("must be one of error, warn, info, debug, got {s:?}"),
                )
            })?,
        };
        let log_file = optional_string(obj, "logFile")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);

        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            ipamd_socket,
            mtu,
            timeout_ms,
            log_level,
            log_file,
            raw,
        })
    }

    /// `timeoutMs` as a duration.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }
}

/// Code 1 unless `version` is one of [`SUPPORTED_VERSIONS`].
pub fn check_supported(version: &str) -> Result<(), CniError> {
    if is_supported(version) {
        Ok(())
    } else {
        Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "unsupported cniVersion {version:?}; this plugin supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

/// Whether `version` is one of [`SUPPORTED_VERSIONS`].
pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Whether `version` is `min` or later; both must be supported versions,
/// otherwise `false`. [`SUPPORTED_VERSIONS`] is oldest first, so the
/// position orders them without parsing.
pub fn version_at_least(version: &str, min: &str) -> bool {
    let pos = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    matches!((pos(version), pos(min)), (Some(v), Some(m)) if v >= m)
}

/// The `cniVersion` a request on stdin asked for, if it can be read at all
/// (stdin a JSON object with a string `cniVersion`). Used where a failed
/// parse must not stop the answer: VERSION, and choosing the version of an
/// error object.
pub fn sniff_version(doc: &Value) -> Option<&str> {
    doc.get("cniVersion").and_then(Value::as_str)
}

/// The log settings of a configuration that may not validate: a bad `mtu`
/// is exactly the kind of failure worth finding in the log file. Invalid
/// values fall back to the defaults.
pub fn sniff_log_settings(doc: Option<&Value>) -> (LogLevel, Option<PathBuf>) {
    let get = |key| doc.and_then(|d| d.get(key)).and_then(Value::as_str);
    let level = get("logLevel")
        .and_then(LogLevel::parse)
        .unwrap_or_default();
    let file = get("logFile").filter(|s| !s.is_empty()).map(PathBuf::from);
    (level, file)
}

/// The value of an optional key, `None` when absent or `null`.
fn optional<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match optional(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(key, "must be a string")),
    }
}

fn invalid(key: &str, problem: &str) -> CniError {
    CniError::new(
        INVALID_NETWORK_CONFIG,
        format!("invalid network configuration: {key:?} {problem}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        parse_netconf(v.to_string().as_bytes())
    }

    fn code7(v: Value) -> String {
        let err = parse(v).unwrap_err();
        assert_eq!(err.code, INVALID_NETWORK_CONFIG, "{err}");
        err.msg
    }

    fn base() -> Value {
        json!({"cniVersion": "1.1.0", "name": "vpc", "type": "vpc-cni"})
    }

    fn base_with(key: &str, value: Value) -> Value {
        let mut v = base();
        v[key] = value;
        v
    }

    #[test]
    fn defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.cni_version, "1.1.0");
        assert_eq!(c.name, "vpc");
        assert_eq!(c.plugin_type.as_deref(), Some("vpc-cni"));
        assert_eq!(c.ipamd_socket, Path::new(DEFAULT_IPAMD_SOCKET));
        assert_eq!(c.mtu, 9001);
        assert_eq!(c.timeout_ms, 10_000);
        assert_eq!(c.timeout(), std::time::Duration::from_secs(10));
        assert_eq!(c.log_level, LogLevel::Warn);
        assert_eq!(c.log_file, None);
        assert_eq!(c.raw, base());
    }

    #[test]
    fn all_keys_set_and_extra_keys_kept() {
        let v = json!({
            "cniVersion": "0.4.0",
            "name": "vpc",
            "type": "vpc-cni",
            "ipamdSocket": "/tmp/x/ipamd.sock",
            "mtu": 1500,
            "timeoutMs": 250,
            "logLevel": "DEBUG",
            "logFile": "/var/log/vpc-cni.log",
            "runtimeConfig": {"portMappings": [{"hostPort": 8080}]},
            "prevResult": {"cniVersion": "0.4.0", "ips": []}
        });
        let c = parse(v.clone()).unwrap();
        assert_eq!(c.ipamd_socket, Path::new("/tmp/x/ipamd.sock"));
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.timeout_ms, 250);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(
            c.log_file.as_deref(),
            Some(Path::new("/var/log/vpc-cni.log"))
        );
        assert_eq!(c.raw, v);
    }

    #[test]
    fn null_and_empty_optionals_take_defaults() {
        let mut v = base();
        for key in [
            "type",
            "ipamdSocket",
            "mtu",
            "timeoutMs",
            "logLevel",
            "logFile",
        ] {
            v[key] = Value::Null;
        }
        let c = parse(v).unwrap();
        assert_eq!(c.mtu, DEFAULT_MTU);
        assert_eq!(c.plugin_type, None);
        assert_eq!(
            parse(base_with("logFile", json!(""))).unwrap().log_file,
            None
        );
    }

    #[test]
    fn garbage_is_code_6() {
        for bad in [
            &b""[..],
            b"not json",
            b"{",
            b"[1,2]",
            b"\"str\"",
            b"42",
            b"null",
            b"\xff\xfe",
        ] {
            let err = parse_netconf(bad).unwrap_err();
            assert_eq!(
                err.code,
                DECODE_FAILURE,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            NetConf::from_value(json!([])).unwrap_err().code,
            DECODE_FAILURE
        );
    }

    #[test]
    fn cni_version_missing_or_not_string_is_code_7() {
        assert!(code7(json!({"name": "vpc"})).contains("cniVersion"));
        assert!(code7(json!({"cniVersion": 1.1, "name": "vpc"})).contains("cniVersion"));
    }

    #[test]
    fn unsupported_version_is_code_1() {
        for v in ["0.2.0", "9.9.9", "0.1.0", "", "1.1"] {
            let err = parse(json!({"cniVersion": v, "name": "vpc"})).unwrap_err();
            assert_eq!(err.code, INCOMPATIBLE_VERSION, "{v}");
            assert!(err.msg.contains(&format!("{v:?}")), "{}", err.msg);
            assert!(
                err.msg.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
                "{}",
                err.msg
            );
        }
        // The version is checked before the name.
        assert_eq!(
            parse(json!({"cniVersion": "0.2.0"})).unwrap_err().code,
            INCOMPATIBLE_VERSION
        );
    }

    #[test]
    fn every_supported_version_parses() {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(
                parse(base_with("cniVersion", json!(v)))
                    .unwrap()
                    .cni_version,
                *v
            );
        }
    }

    #[test]
    fn name_must_be_a_nonempty_string() {
        assert!(code7(json!({"cniVersion": "1.1.0"})).contains("\"name\" is missing"));
        assert!(code7(base_with("name", json!(3))).contains("\"name\""));
        assert!(code7(base_with("name", json!(""))).contains("\"name\""));
        assert!(code7(base_with("name", Value::Null)).contains("\"name\""));
    }

    #[test]
    fn type_must_be_a_string() {
        assert!(code7(base_with("type", json!(["vpc-cni"]))).contains("\"type\""));
    }

    #[test]
    fn mtu_rules() {
        for bad in [
            json!("abc"),
            json!(100),
            json!(575),
            json!(9002),
            json!(-1),
            json!(1500.5),
            json!(true),
            json!("1500"),
        ] {
            let msg = code7(base_with("mtu", bad.clone()));
            assert!(msg.contains("\"mtu\""), "{bad}: {msg}");
        }
        for ok in [576, 1500, 9001] {
            assert_eq!(parse(base_with("mtu", json!(ok))).unwrap().mtu, ok);
        }
    }

    #[test]
    fn ipamd_socket_must_be_an_absolute_path() {
        for bad in ["ipamd.sock", "./ipamd.sock", "run/vpc-cni/ipamd.sock", ""] {
            let msg = code7(base_with("ipamdSocket", json!(bad)));
            assert!(
                msg.contains("\"ipamdSocket\"") && msg.contains("absolute"),
                "{msg}"
            );
        }
        assert!(code7(base_with("ipamdSocket", json!(1))).contains("\"ipamdSocket\""));
    }

    #[test]
    fn timeout_rules() {
        for bad in [json!(0), json!(-5), json!("10"), json!(1.5)] {
            assert!(code7(base_with("timeoutMs", bad)).contains("\"timeoutMs\""));
        }
        assert_eq!(
            parse(base_with("timeoutMs", json!(1))).unwrap().timeout_ms,
            1
        );
    }

    #[test]
    fn log_keys_rules() {
        assert!(code7(base_with("logLevel", json!("verbose"))).contains("\"logLevel\""));
        assert!(code7(base_with("logLevel", json!(3))).contains("\"logLevel\""));
        assert!(code7(base_with("logFile", json!(false))).contains("\"logFile\""));
        for l in ["error", "warn", "info", "debug"] {
            assert_eq!(
                parse(base_with("logLevel", json!(l)))
                    .unwrap()
                    .log_level
                    .as_str(),
                l
            );
        }
    }

    #[test]
    fn version_ordering() {
        assert!(version_at_least("0.4.0", "0.4.0"));
        assert!(version_at_least("1.1.0", "0.4.0"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
        assert!(!version_at_least("1.0.0", "1.1.0"));
        assert!(!version_at_least("9.9.9", "0.3.0"));
    }

    #[test]
    fn sniffing_is_lenient() {
        let v =
            json!({"cniVersion": "0.4.0", "mtu": "abc", "logLevel": "debug", "logFile": "/tmp/l"});
        assert_eq!(sniff_version(&v), Some("0.4.0"));
        assert_eq!(sniff_version(&json!({"cniVersion": 4})), None);
        assert_eq!(
            sniff_log_settings(Some(&v)),
            (LogLevel::Debug, Some(PathBuf::from("/tmp/l")))
        );
        assert_eq!(
            sniff_log_settings(Some(&json!({"logLevel": "loud", "logFile": 1}))),
            (LogLevel::Warn, None)
        );
        assert_eq!(sniff_log_settings(None), (LogLevel::Warn, None));
    }
}
