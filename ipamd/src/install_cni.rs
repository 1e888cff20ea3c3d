//! `ipamd install-cni`: what the DaemonSet's init container does on the host.
//!
//! It copies the `vpc-cni` plugin into the CNI bin directory, writes
//! `10-vpc-cni.conflist` into the CNI config directory, and makes sure the
//! node forwards IPv4. Each file is written to a temporary name in its
//! destination directory, synced, and renamed over the old one: kubelet and
//! the runtime read these directories at any moment (and may be exec'ing the
//! old plugin), so they must see either the old file or the whole new one,
//! never a half-written one. The plugin goes first, so a conflist never names
//! a binary that is not there yet. Everything is validated before anything
//! is written: a bad setting changes nothing.
//!
//! The conflist carries the settings the plugin needs from ipamd's own
//! configuration (socket, MTU), read from the same environment by the same
//! declaration and parser ([`InstallSettings`]), so the two cannot disagree.
//! The rest of the daemon's configuration is validated, not used: a value
//! `ipamd serve` would refuse stops the init container, so a node never
//! turns Ready with a daemon that cannot start.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cni_plugin::config::LogLevel;
use serde_json::{json, Value};

use crate::config::{Config, ConfigError, InstallSettings};

/// The conflist's file name (kubelet and containerd take the first file of
/// the directory in lexical order).
pub const CONFLIST_NAME: &str = "10-vpc-cni.conflist";
/// The plugin's file name, and its `type` in the conflist.
pub const PLUGIN_NAME: &str = "vpc-cni";
/// The network's `name` in the conflist.
pub const NETWORK_NAME: &str = "vpc";
/// The CNI spec version the conflist declares.
pub const CNI_VERSION: &str = "1.1.0";
/// Where kubelet looks for plugins by default.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// Where kubelet looks for network configurations by default.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

const USAGE: &str =
    "usage: ipamd install-cni [--bin-dir DIR] [--conf-dir DIR] [--plugin FILE] [--proc-sys DIR]

Installs the vpc-cni plugin and its conflist on the node (the DaemonSet's init container).
  --bin-dir DIR    CNI plugin directory (default /opt/cni/bin)
  --conf-dir DIR   CNI configuration directory (default /etc/cni/net.d)
  --plugin FILE    the plugin to install (default: vpc-cni beside this ipamd)
  --proc-sys DIR   sysctl tree where net/ipv4/ip_forward is set (default /proc/sys)
Environment: AWS_VPC_ENI_MTU and VPC_CNI_SOCKET (as ipamd serve reads them),
VPC_CNI_PLUGIN_LOG_LEVEL (error|warn|info|debug) and VPC_CNI_PLUGIN_LOG_FILE (absolute path).
";

/// Why the installation did not happen (or stopped part-way).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A command-line argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// A setting shared with `ipamd serve` is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A directory to install into does not exist.
    #[error("{what} {path} is not a directory")]
    NotADirectory {
        /// Which directory.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// The plugin binary to install cannot be read.
    #[error("cannot read the plugin {path}: {source}")]
    Plugin {
        /// Its path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Writing a file on the host failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// IPv4 forwarding could not be enabled.
    #[error("cannot enable net.ipv4.ip_forward (the init container must be privileged): {0}")]
    Forwarding(#[source] io::Error),
}

/// What to install where; see [`Options::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `--bin-dir`.
    pub bin_dir: PathBuf,
    /// `--conf-dir`.
    pub conf_dir: PathBuf,
    /// `--plugin`.
    pub plugin: PathBuf,
    /// `--proc-sys`.
    pub proc_sys: PathBuf,
    /// The plugin's network configuration (the conflist's `plugins[0]`).
    pub socket: PathBuf,
    /// Pod MTU.
    pub mtu: u32,
    /// `VPC_CNI_PLUGIN_LOG_LEVEL`.
    pub plugin_log_level: Option<LogLevel>,
    /// `VPC_CNI_PLUGIN_LOG_FILE`.
    pub plugin_log_file: Option<PathBuf>,
}

impl Options {
    /// Reads the arguments after `install-cni` and the environment.
    /// `default_plugin` is used without `--plugin` (the binary beside ipamd).
    pub fn parse(
        args: &[String],
        vars: impl IntoIterator<Item = (String, String)>,
        default_plugin: PathBuf,
    ) -> Result<Options, InstallError> {
        let mut bin_dir = PathBuf::from(DEFAULT_BIN_DIR);
        let mut conf_dir = PathBuf::from(DEFAULT_CONF_DIR);
        let mut plugin = default_plugin;
        let mut proc_sys = PathBuf::from(crate::sysctl::PROC_SYS);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            let slot = match flag {
                "--bin-dir" => &mut bin_dir,
                "--conf-dir" => &mut conf_dir,
                "--plugin" => &mut plugin,
                "--proc-sys" => &mut proc_sys,
                other => return Err(InstallError::Usage(format!("unknown argument {other:?}"))),
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| InstallError::Usage(format!("{flag} needs a value")))?,
            };
            if value.is_empty() {
                return Err(InstallError::Usage(format!("{flag} needs a value")));
            }
            *slot = PathBuf::from(value);
        }
        // The init container gets the same environment as `ipamd serve`:
        // a setting the daemon would refuse stops it here, before the
        // conflist makes the node Ready for pods the daemon cannot serve.
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        Config::from_vars(vars.clone())?;
        // The socket and MTU exactly as `ipamd serve` will read them.
        let settings = InstallSettings::from_vars(vars)?;
        Ok(Options {
            bin_dir,
            conf_dir,
            plugin,
            proc_sys,
            socket: settings.socket,
            mtu: settings.mtu,
            plugin_log_level: settings.plugin_log_level,
            plugin_log_file: settings.plugin_log_file,
        })
    }
}

/// The conflist for these options; `portmap` is chained when the runtime's
/// bin directory has it (hostPort support, as aws-node does).
pub fn conflist(opts: &Options, with_portmap: bool) -> Value {
    let mut plugin = json!({
        "type": PLUGIN_NAME,
        "ipamdSocket": opts.socket,
        "mtu": opts.mtu,
    });
    if let Some(level) = opts.plugin_log_level {
        plugin["logLevel"] = json!(level.as_str());
    }
    if let Some(file) = &opts.plugin_log_file {
        plugin["logFile"] = json!(file);
    }
    let mut plugins = vec![plugin];
    if with_portmap {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        }));
    }
    json!({ "cniVersion": CNI_VERSION, "name": NETWORK_NAME, "plugins": plugins })
}

/// What [`install`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The installed plugin.
    pub plugin: PathBuf,
    /// The written conflist.
    pub conflist: PathBuf,
    /// Whether `portmap` was chained.
    pub portmap: bool,
    /// Whether ip_forward had to be switched on.
    pub enabled_forwarding: bool,
    /// Network configurations that sort before ours: the runtime uses the
    /// first one, so while these exist pods do not get vpc-cni.
    pub shadowing: Vec<PathBuf>,
}

/// Installs the plugin and the conflist, and enables forwarding.
pub fn install(opts: &Options) -> Result<Report, InstallError> {
    for (what, dir) in [("--bin-dir", &opts.bin_dir), ("--conf-dir", &opts.conf_dir)] {
        if !dir.is_dir() {
            return Err(InstallError::NotADirectory {
                what,
                path: dir.clone(),
            });
        }
    }
    let binary = std::fs::read(&opts.plugin).map_err(|source| InstallError::Plugin {
        path: opts.plugin.clone(),
        source,
    })?;
    if binary.is_empty() {
        return Err(InstallError::Plugin {
            path: opts.plugin.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, "empty file"),
        });
    }
    let with_portmap = opts.bin_dir.join("portmap").is_file();
    let mut doc = serde_json::to_vec_pretty(&conflist(opts, with_portmap))
        .expect("a JSON value always serialises");
    doc.push(b'\n');

    let enabled_forwarding = crate::sysctl::ensure(&opts.proc_sys, "net/ipv4/ip_forward", "1")
        .map_err(InstallError::Forwarding)?;
    let plugin = write_atomic(&opts.bin_dir, PLUGIN_NAME, &binary, 0o755)?;
    let conflist = write_atomic(&opts.conf_dir, CONFLIST_NAME, &doc, 0o644)?;
    Ok(Report {
        plugin,
        conflist,
        portmap: with_portmap,
        enabled_forwarding,
        shadowing: shadowing(&opts.conf_dir),
    })
}

/// Writes `dir/name` through a temporary file in `dir` and a rename, with
/// the data and the directory entry synced.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    data: &[u8],
    mode: u32,
) -> Result<PathBuf, InstallError> {
    let dest = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let fail = |source| InstallError::Write {
        path: dest.clone(),
        source,
    };
    // A leftover from a killed earlier run of this same pid is ours to replace.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(data)?;
        // The umask may have narrowed `mode`; the plugin must be executable.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&tmp, &dest)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(dest)
}

/// Configuration files in `dir` that a runtime would pick before ours.
fn shadowing(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_conf = [".conf", ".conflist", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext));
            is_conf && !name.starts_with('.') && name < CONFLIST_NAME
        })
        .collect();
    found.sort();
    found
}

/// `ipamd install-cni`: parses, installs, reports on stderr.
pub fn main(args: &[String], vars: impl IntoIterator<Item = (String, String)>) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let default_plugin = std::env::current_exe()
        .map(|p| p.with_file_name(PLUGIN_NAME))
        .unwrap_or_else(|_| PathBuf::from(PLUGIN_NAME));
    let opts = match Options::parse(args, vars, default_plugin) {
        Ok(o) => o,
        Err(e) => {
            eprint!("ipamd install-cni: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match install(&opts) {
        Ok(report) => {
            eprintln!("ipamd install-cni: installed {}", report.plugin.display());
            eprintln!(
                "ipamd install-cni: wrote {}{}",
                report.conflist.display(),
                if report.portmap {
                    " (portmap chained)"
                } else {
                    ""
                }
            );
            if report.enabled_forwarding {
                eprintln!("ipamd install-cni: enabled net.ipv4.ip_forward");
            }
            for other in &report.shadowing {
                eprintln!(
                    "ipamd install-cni: warning: {} sorts before {CONFLIST_NAME}: the runtime uses it \
                     instead of vpc-cni until it is removed",
                    other.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ipamd install-cni: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_plugin::config::NetConf;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("vpc-cni-install-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for sub in ["bin", "net.d", "src", "proc/net/ipv4"] {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
            }
            std::fs::write(dir.join("src/vpc-cni"), b"\x7fELF not really").unwrap();
            std::fs::write(dir.join("proc/net/ipv4/ip_forward"), "0\n").unwrap();
            Scratch(dir)
        }

        fn args(&self) -> Vec<String> {
            vec![
                format!("--bin-dir={}", self.0.join("bin").display()),
                "--conf-dir".into(),
                self.0.join("net.d").display().to_string(),
                format!("--proc-sys={}", self.0.join("proc").display()),
            ]
        }

        fn opts(&self, vars: &[(&str, &str)]) -> Result<Options, InstallError> {
            Options::parse(
                &self.args(),
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
                self.0.join("src/vpc-cni"),
            )
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The plugin entry as the runtime hands it to the plugin: the
    /// conflist's `cniVersion` and `name` merged in.
    fn as_plugin_sees_it(doc: &Value) -> Value {
        let mut entry = doc["plugins"][0].clone();
        entry["cniVersion"] = doc["cniVersion"].clone();
        entry["name"] = doc["name"].clone();
        entry
    }

    #[test]
    fn installs_plugin_and_conflist_the_plugin_accepts() {
        let s = Scratch::new("ok");
        let report = install(&s.opts(&[("AWS_VPC_ENI_MTU", "1500")]).unwrap()).unwrap();
        let installed = s.0.join("bin/vpc-cni");
        assert_eq!(report.plugin, installed);
        assert_eq!(std::fs::read(&installed).unwrap(), b"\x7fELF not really");
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(report.enabled_forwarding);
        assert_eq!(
            std::fs::read_to_string(s.0.join("proc/net/ipv4/ip_forward")).unwrap(),
            "1"
        );
        let doc: Value =
            serde_json::from_slice(&std::fs::read(s.0.join("net.d").join(CONFLIST_NAME)).unwrap())
                .unwrap();
        assert_eq!(
            doc["plugins"].as_array().unwrap().len(),
            1,
            "no portmap here"
        );
        let conf = NetConf::from_value(as_plugin_sees_it(&doc)).unwrap();
        assert_eq!(conf.mtu, 1500);
        assert_eq!(
            conf.ipamd_socket,
            PathBuf::from(cni_plugin::config::DEFAULT_IPAMD_SOCKET)
        );
        assert_eq!(conf.plugin_type.as_deref(), Some(PLUGIN_NAME));
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(s.0.join("net.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [CONFLIST_NAME]);
    }

    #[test]
    fn chains_portmap_and_carries_plugin_logging_and_socket() {
        let s = Scratch::new("portmap");
        std::fs::write(s.0.join("bin/portmap"), b"x").unwrap();
        let opts = s
            .opts(&[
                ("VPC_CNI_SOCKET", "/run/other/ipamd.sock"),
                ("VPC_CNI_PLUGIN_LOG_LEVEL", "debug"),
                ("VPC_CNI_PLUGIN_LOG_FILE", "/var/log/vpc-cni/plugin.log"),
            ])
            .unwrap();
        let report = install(&opts).unwrap();
        assert!(report.portmap);
        let doc: Value = serde_json::from_slice(&std::fs::read(&report.conflist).unwrap()).unwrap();
        assert_eq!(doc["plugins"][1]["type"], "portmap");
        assert_eq!(doc["plugins"][1]["capabilities"]["portMappings"], true);
        let conf = NetConf::from_value(as_plugin_sees_it(&doc)).unwrap();
        assert_eq!(conf.ipamd_socket, PathBuf::from("/run/other/ipamd.sock"));
        assert_eq!(conf.log_level, LogLevel::Debug);
        assert_eq!(
            conf.log_file,
            Some(PathBuf::from("/var/log/vpc-cni/plugin.log"))
        );
        assert_eq!(conf.mtu, 9001);
    }

    #[test]
    fn replaces_an_older_install_and_reports_shadowing_configs() {
        let s = Scratch::new("replace");
        std::fs::write(s.0.join("bin/vpc-cni"), b"old plugin").unwrap();
        std::fs::write(s.0.join("net.d").join(CONFLIST_NAME), b"{}").unwrap();
        std::fs::write(s.0.join("net.d/10-aws.conflist"), b"{}").unwrap();
        std::fs::write(s.0.join("net.d/99-loopback.conf"), b"{}").unwrap();
        let report = install(&s.opts(&[]).unwrap()).unwrap();
        assert_eq!(
            std::fs::read(s.0.join("bin/vpc-cni")).unwrap(),
            b"\x7fELF not really"
        );
        assert_ne!(std::fs::read(&report.conflist).unwrap(), b"{}");
        assert_eq!(report.shadowing, [s.0.join("net.d/10-aws.conflist")]);
        // Forwarding already on: left alone the second time.
        assert!(!install(&s.opts(&[]).unwrap()).unwrap().enabled_forwarding);
    }

    #[test]
    fn bad_input_changes_nothing() {
        let s = Scratch::new("bad");
        let nothing_written = |s: &Scratch| {
            assert!(!s.0.join("bin/vpc-cni").exists());
            assert!(!s.0.join("net.d").join(CONFLIST_NAME).exists());
            assert_eq!(
                std::fs::read_to_string(s.0.join("proc/net/ipv4/ip_forward")).unwrap(),
                "0\n"
            );
        };
        for (var, value) in [
            ("AWS_VPC_ENI_MTU", "70000"),
            ("VPC_CNI_SOCKET", "relative.sock"),
            ("VPC_CNI_PLUGIN_LOG_LEVEL", "chatty"),
            ("VPC_CNI_PLUGIN_LOG_FILE", "plugin.log"),
        ] {
            let e = s.opts(&[(var, value)]).unwrap_err();
            assert!(
                e.to_string().contains(var) && e.to_string().contains(value),
                "{e}"
            );
        }
        let mut opts = s.opts(&[]).unwrap();
        opts.plugin = s.0.join("src/missing");
        let e = install(&opts).unwrap_err();
        assert!(e.to_string().contains("src/missing"), "{e}");
        let mut opts = s.opts(&[]).unwrap();
        opts.conf_dir = s.0.join("no-such-dir");
        let e = install(&opts).unwrap_err();
        assert!(
            e.to_string().contains("--conf-dir") && e.to_string().contains("no-such-dir"),
            "{e}"
        );
        nothing_written(&s);
    }

    #[test]
    fn argument_errors_are_specific() {
        let parse = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            Options::parse(&args, Vec::new(), PathBuf::from("/x/vpc-cni"))
        };
        let e = parse(&["--bin-dir"]).unwrap_err();
        assert!(e.to_string().contains("--bin-dir needs a value"), "{e}");
        let e = parse(&["--frobnicate"]).unwrap_err();
        assert!(e.to_string().contains("--frobnicate"), "{e}");
        let e = parse(&["--conf-dir="]).unwrap_err();
        assert!(e.to_string().contains("--conf-dir needs a value"), "{e}");
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.bin_dir, PathBuf::from(DEFAULT_BIN_DIR));
        assert_eq!(defaults.conf_dir, PathBuf::from(DEFAULT_CONF_DIR));
        assert_eq!(defaults.proc_sys, PathBuf::from("/proc/sys"));
        assert_eq!(defaults.plugin, PathBuf::from("/x/vpc-cni"));
    }
}
