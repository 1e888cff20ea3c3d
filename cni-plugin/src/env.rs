//! The `CNI_*` environment of one plugin call, parsed into an [`Invocation`].
//!
//! Parsing takes the variables as an explicit list rather than reading
//! `std::env`, so the rules below are tested without touching the process
//! environment. Which variables each command needs follows the CNI spec 1.1.0
//! ("Parameters") and the reference `skel` package, with the runtime quirks
//! listed in DESIGN.md: DEL may come with an empty `CNI_NETNS`, and `CNI_ARGS`
//! may hold any subset of the Kubernetes keys in any order.

use crate::error::{CniError, INVALID_ENV};
use crate::wire::{Command, PodArgs};

/// The kernel's `IFNAMSIZ` minus the terminating NUL.
pub const MAX_IFNAME_BYTES: usize = 15;

/// A `CNI_COMMAND` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CniCommand {
    /// Set up the container's network.
    Add,
    /// Tear it down.
    Del,
    /// Verify it is still as ADD left it.
    Check,
    /// Report the spec versions this plugin speaks (answered locally).
    Version,
    /// Report whether the plugin can serve ADD now.
    Status,
    /// Release resources of attachments the runtime no longer knows.
    Gc,
}

impl CniCommand {
    /// Every command, in the order the spec lists them.
    pub const ALL: [CniCommand; 6] = [
        CniCommand::Add,
        CniCommand::Del,
        CniCommand::Check,
        CniCommand::Version,
        CniCommand::Status,
        CniCommand::Gc,
    ];

    /// Parses the exact upper-case spelling the spec defines.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The `CNI_COMMAND` spelling, e.g. `ADD`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
            CniCommand::Status => "STATUS",
            CniCommand::Gc => "GC",
        }
    }

    /// The verb sent to ipamd, or `None` for VERSION, which never leaves
    /// the plugin.
    pub fn to_wire(self) -> Option<Command> {
        match self {
            CniCommand::Add => Some(Command::Add),
            CniCommand::Del => Some(Command::Del),
            CniCommand::Check => Some(Command::Check),
            CniCommand::Status => Some(Command::Status),
            CniCommand::Gc => Some(Command::Gc),
            CniCommand::Version => None,
        }
    }

    /// Whether the command concerns one container attachment and so needs
    /// `CNI_CONTAINERID` and `CNI_IFNAME` (and reads `CNI_ARGS`).
    fn is_per_container(self) -> bool {
        matches!(self, CniCommand::Add | CniCommand::Del | CniCommand::Check)
    }
}

impl std::fmt::Display for CniCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the environment says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: CniCommand,
    /// `CNI_CONTAINERID`; empty for VERSION, STATUS and GC.
    pub container_id: String,
    /// `CNI_NETNS`, unchanged; empty when the runtime sent none (the second
    /// DEL) and for VERSION, STATUS and GC.
    pub netns: String,
    /// `CNI_IFNAME`; empty for VERSION, STATUS and GC.
    pub ifname: String,
    /// The Kubernetes keys of `CNI_ARGS` (ADD, DEL and CHECK only).
    pub args: PodArgs,
    /// `CNI_PATH`, unparsed; this plugin delegates to no other plugin, so
    /// it is kept for logs only and never required.
    pub path: Option<String>,
}

/// Parses the `CNI_*` variables of one call. Other variables are ignored;
/// when a name repeats, the last value wins, as with `setenv`.
///
/// Every failure is code 4 ([`INVALID_ENV`]) and names the variable.
///
/// ```
/// use cni_plugin::env::{parse_env, CniCommand};
///
/// let inv = parse_env([
///     ("CNI_COMMAND", "DEL"),
///     ("CNI_CONTAINERID", "f00d"),
///     ("CNI_NETNS", ""),
///     ("CNI_IFNAME", "eth0"),
/// ])
/// .unwrap();
/// assert_eq!(inv.command, CniCommand::Del);
/// assert_eq!(inv.netns, "");
/// ```
pub fn parse_env<I, K, V>(vars: I) -> Result<Invocation, CniError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Into<String>,
{
    let mut command = None;
    let mut container_id = None;
    let mut netns = None;
    let mut ifname = None;
    let mut cni_args = None;
    let mut path = None;
    for (key, value) in vars {
        let slot = match key.as_ref() {
            "CNI_COMMAND" => &mut command,
            "CNI_CONTAINERID" => &mut container_id,
            "CNI_NETNS" => &mut netns,
            "CNI_IFNAME" => &mut ifname,
            "CNI_ARGS" => &mut cni_args,
            "CNI_PATH" => &mut path,
            _ => continue,
        };
        *slot = Some(value.into());
    }

    let command_str = required("CNI_COMMAND", command)?;
    let command = CniCommand::parse(&command_str).ok_or_else(|| {
        CniError::new(INVALID_ENV, format!("unknown CNI_COMMAND {command_str:?}")).with_details(
            format!(
                "expected one of {}",
                CniCommand::ALL.map(CniCommand::as_str).join(", ")
            ),
        )
    })?;
    let path = path.filter(|p| !p.is_empty());

    if !command.is_per_container() {
        // STATUS and GC speak about the whole network, and VERSION about the
        // plugin; the spec passes them no container, so stray values are
        // dropped rather than forwarded or validated.
        return Ok(Invocation {
            command,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            args: PodArgs::default(),
            path,
        });
    }

    let container_id = required("CNI_CONTAINERID", container_id)?;
    validate_container_id(&container_id)?;
    let netns = if command == CniCommand::Del {
        // containerd calls DEL a second time when it removes the sandbox,
        // after the netns is gone, and then sends CNI_NETNS empty; ipamd
        // must still release the address, so this is not an error.
        netns.unwrap_or_default()
    } else {
        required("CNI_NETNS", netns)?
    };
    let ifname = required("CNI_IFNAME", ifname)?;
    validate_ifname(&ifname)?;
    let args = parse_cni_args(cni_args.as_deref().unwrap_or(""))?;

    Ok(Invocation {
        command,
        container_id,
        netns,
        ifname,
        args,
        path,
    })
}

fn required(name: &str, value: Option<String>) -> Result<String, CniError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(CniError::new(
            INVALID_ENV,
            format!("missing required environment variable {name}"),
        )),
    }
}

/// Parses `CNI_ARGS` (`K=V;K=V`) and keeps the Kubernetes pod keys.
///
/// Unknown keys (`IgnoreUnknown`, podman's `IP=`/`MAC=`, ...) are skipped,
/// empty values count as absent, and empty segments (`a=b;;`) are tolerated.
/// A segment without `=` or with an empty key is code 4, as in the
/// reference `skel`. Values may themselves contain `=`.
pub fn parse_cni_args(s: &str) -> Result<PodArgs, CniError> {
    let mut args = PodArgs::default();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(
                CniError::new(INVALID_ENV, format!("CNI_ARGS: invalid pair {pair:?}"))
                    .with_details("CNI_ARGS must be a list of KEY=VALUE separated by ';'"),
            );
        };
        let slot = match key {
            "K8S_POD_NAMESPACE" => &mut args.namespace,
            "K8S_POD_NAME" => &mut args.name,
            "K8S_POD_INFRA_CONTAINER_ID" => &mut args.infra_container_id,
            "K8S_POD_UID" => &mut args.uid,
            _ => continue,
        };
        *slot = Some(value.to_string()).filter(|v| !v.is_empty());
    }
    Ok(args)
}

/// Checks `CNI_IFNAME` the way the kernel's `dev_valid_name` does (and the
/// reference `skel` after it): non-empty, at most 15 bytes, not `.` or
/// `..`, and free of `/`, `:` and whitespace. Failing here gives the runtime
/// a clear code 4 instead of an obscure netlink error from ipamd.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > MAX_IFNAME_BYTES {
        Some(format!("is longer than {MAX_IFNAME_BYTES} bytes"))
    } else if name == "." || name == ".." {
        Some("is . or ..".to_string())
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(CniError::new(
            INVALID_ENV,
            format!("invalid CNI_IFNAME {name:?}: interface name {p}"),
        )),
    }
}

/// Checks `CNI_CONTAINERID` against the spec's alphabet
/// (`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`). ipamd keys its checkpoint by this id,
/// so a stray `/` or newline must not get that far.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::new(
            INVALID_ENV,
            format!("invalid CNI_CONTAINERID {id:?}"),
        )
        .with_details("a container id is letters, digits, '_', '.' and '-', starting with a letter or digit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "3f5a9c0e1b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a";

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", CID),
            ("CNI_NETNS", "/var/run/netns/cni-0b7e0d2c-5b1f-4c2a-9d7e-1f2a3b4c5d6e"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
        ]
    }

    fn without(
        mut env: Vec<(&'static str, &'static str)>,
        key: &str,
    ) -> Vec<(&'static str, &'static str)> {
        env.retain(|(k, _)| *k != key);
        env
    }

    fn with(
        mut env: Vec<(&'static str, &'static str)>,
        key: &'static str,
        value: &'static str,
    ) -> Vec<(&'static str, &'static str)> {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
        env
    }

    fn code4(env: Vec<(&'static str, &'static str)>) -> String {
        let err = parse_env(env).unwrap_err();
        assert_eq!(err.code, INVALID_ENV, "{err}");
        err.msg
    }

    #[test]
    fn parses_a_kubelet_add() {
        let inv = parse_env(add_env()).unwrap();
        assert_eq!(inv.command, CniCommand::Add);
        assert_eq!(inv.container_id, CID);
        assert_eq!(
            inv.netns,
            "/var/run/netns/cni-0b7e0d2c-5b1f-4c2a-9d7e-1f2a3b4c5d6e"
        );
        assert_eq!(inv.ifname, "eth0");
        assert_eq!(inv.path.as_deref(), Some("/opt/cni/bin"));
        assert_eq!(
            inv.args,
            PodArgs {
                namespace: Some("default".into()),
                name: Some("web-0".into()),
                infra_container_id: Some("abc".into()),
                uid: Some("u-1".into()),
            }
        );
    }

    #[test]
    fn accepts_owned_strings_and_ignores_other_variables() {
        let mut env: Vec<(String, String)> = add_env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("PATH".into(), "/usr/bin".into()));
        env.push(("cni_command".into(), "DEL".into()));
        assert_eq!(parse_env(env).unwrap().command, CniCommand::Add);
    }

    #[test]
    fn last_value_of_a_repeated_variable_wins() {
        let mut env = add_env();
        env.push(("CNI_IFNAME", "net1"));
        assert_eq!(parse_env(env).unwrap().ifname, "net1");
    }

    #[test]
    fn netns_is_passed_through_unchanged() {
        for ns in [
            "/var/run/netns/cni-1234",
            "/run/netns/podman-x",
            "/proc/4242/ns/net",
        ] {
            let env = add_env()
                .into_iter()
                .map(|(k, v)| (k, if k == "CNI_NETNS" { ns } else { v }));
            assert_eq!(parse_env(env).unwrap().netns, ns);
        }
    }

    #[test]
    fn missing_command_is_code_4() {
        assert_eq!(
            code4(without(add_env(), "CNI_COMMAND")),
            "missing required environment variable CNI_COMMAND"
        );
        assert_eq!(
            code4(with(add_env(), "CNI_COMMAND", "")),
            "missing required environment variable CNI_COMMAND"
        );
    }

    #[test]
    fn unknown_command_is_code_4() {
        for cmd in ["FOO", "add", "Add", " ADD"] {
            let env = with(add_env(), "CNI_COMMAND", cmd);
            let err = parse_env(env).unwrap_err();
            assert_eq!(err.code, INVALID_ENV);
            assert!(err.msg.contains("CNI_COMMAND"), "{}", err.msg);
            assert!(err.details.contains("ADD, DEL, CHECK, VERSION, STATUS, GC"));
        }
    }

    #[test]
    fn add_and_check_need_containerid_netns_ifname() {
        for cmd in ["ADD", "CHECK"] {
            let base = with(add_env(), "CNI_COMMAND", cmd);
            for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
                let want = format!("missing required environment variable {var}");
                assert_eq!(code4(without(base.clone(), var)), want, "{cmd}");
                assert_eq!(code4(with(base.clone(), var, "")), want, "{cmd}");
            }
        }
    }

    #[test]
    fn del_accepts_empty_or_absent_netns() {
        let del = with(add_env(), "CNI_COMMAND", "DEL");
        let inv = parse_env(with(del.clone(), "CNI_NETNS", "")).unwrap();
        assert_eq!(inv.netns, "");
        assert_eq!(inv.container_id, CID);
        assert_eq!(
            parse_env(without(del.clone(), "CNI_NETNS")).unwrap().netns,
            ""
        );
        assert_eq!(
            code4(without(del.clone(), "CNI_CONTAINERID")),
            "missing required environment variable CNI_CONTAINERID"
        );
        assert_eq!(
            code4(without(del, "CNI_IFNAME")),
            "missing required environment variable CNI_IFNAME"
        );
    }

    #[test]
    fn status_gc_version_need_nothing_but_the_command() {
        for (cmd, want) in [
            ("STATUS", CniCommand::Status),
            ("GC", CniCommand::Gc),
            ("VERSION", CniCommand::Version),
        ] {
            let inv = parse_env([("CNI_COMMAND", cmd)]).unwrap();
            assert_eq!(inv.command, want);
            assert_eq!(inv.container_id, "");
            assert_eq!(inv.args, PodArgs::default());
            // Stray per-container values are neither validated nor kept.
            let inv = parse_env([
                ("CNI_COMMAND", cmd),
                ("CNI_IFNAME", "a/b"),
                ("CNI_ARGS", "junk"),
            ])
            .unwrap();
            assert_eq!(inv.ifname, "");
        }
    }

    #[test]
    fn cni_args_in_any_order_and_subsets() {
        let a = parse_cni_args("K8S_POD_NAME=x;K8S_POD_NAMESPACE=ns").unwrap();
        let b = parse_cni_args("K8S_POD_NAMESPACE=ns;IgnoreUnknown=true;K8S_POD_NAME=x").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.name.as_deref(), Some("x"));
        assert_eq!(a.namespace.as_deref(), Some("ns"));

        // podman: only the pod name, sometimes with IP and MAC requests.
        let p = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=x").unwrap();
        assert_eq!(
            p,
            PodArgs {
                name: Some("x".into()),
                ..PodArgs::default()
            }
        );
        let p = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.88.0.5;MAC=0a:58:0a:58:00:05")
            .unwrap();
        assert_eq!(p.name.as_deref(), Some("x"));
        assert_eq!(p.namespace, None);

        let only_name = with(add_env(), "CNI_ARGS", "K8S_POD_NAME=x");
        assert_eq!(
            parse_env(only_name).unwrap().args.name.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn cni_args_tolerates_empty_input_values_and_segments() {
        assert_eq!(parse_cni_args("").unwrap(), PodArgs::default());
        assert_eq!(parse_cni_args(";").unwrap(), PodArgs::default());
        let a = parse_cni_args("K8S_POD_NAME=;K8S_POD_UID=u;;").unwrap();
        assert_eq!(a.name, None);
        assert_eq!(a.uid.as_deref(), Some("u"));
        assert_eq!(
            parse_cni_args("K8S_POD_NAME=a=b").unwrap().name.as_deref(),
            Some("a=b")
        );
        assert_eq!(
            parse_env(without(add_env(), "CNI_ARGS")).unwrap().args,
            PodArgs::default()
        );
    }

    #[test]
    fn malformed_cni_args_pair_is_code_4() {
        for bad in ["K8S_POD_NAME", "K8S_POD_NAME=x;oops", "=x"] {
            let err = parse_cni_args(bad).unwrap_err();
            assert_eq!(err.code, INVALID_ENV, "{bad}");
            assert!(err.msg.starts_with("CNI_ARGS"), "{}", err.msg);
        }
        let msg = code4(with(add_env(), "CNI_ARGS", "IgnoreUnknown=1;garbage"));
        assert!(msg.contains("\"garbage\""), "{msg}");
    }

    #[test]
    fn ifname_rules() {
        for ok in [
            "eth0",
            "net1",
            "a",
            "fifteen-chars-x",
            "eth0.100",
            "vpc_eni-1",
        ] {
            validate_ifname(ok).unwrap();
        }
        for bad in [
            "",
            "sixteen-chars-xx",
            ".",
            "..",
            "a/b",
            "a b",
            "tab\t",
            "eth0:1",
            "new\nline",
        ] {
            let err = validate_ifname(bad).unwrap_err();
            assert_eq!(err.code, INVALID_ENV, "{bad:?}");
            assert!(err.msg.contains("CNI_IFNAME"), "{}", err.msg);
        }
        // Bytes, not characters: the kernel counts bytes.
        assert!(validate_ifname("ééééééééé").is_err());
        assert!(code4(with(add_env(), "CNI_IFNAME", "..")).contains("CNI_IFNAME"));
    }

    #[test]
    fn container_id_rules() {
        for ok in [CID, "abc", "a.b_c-d", "0"] {
            validate_container_id(ok).unwrap();
        }
        for bad in ["-abc", ".x", "a/b", "a b", "a\n", "ä"] {
            assert_eq!(
                validate_container_id(bad).unwrap_err().code,
                INVALID_ENV,
                "{bad:?}"
            );
        }
        let msg = code4(with(add_env(), "CNI_CONTAINERID", "../etc"));
        assert!(msg.contains("CNI_CONTAINERID"), "{msg}");
    }

    #[test]
    fn command_round_trips() {
        for c in CniCommand::ALL {
            assert_eq!(CniCommand::parse(c.as_str()), Some(c));
            assert_eq!(c.to_string(), c.as_str());
            if let Some(w) = c.to_wire() {
                assert_eq!(w.as_str(), c.as_str());
            }
        }
        assert_eq!(CniCommand::Version.to_wire(), None);
    }
}
