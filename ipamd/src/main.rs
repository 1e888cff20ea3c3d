//! `ipamd`: the vpc-cni node daemon and its operator commands.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};
use cni_plugin::wire::{Command, Request};
use ipamd::config::{Config, LogFormat};

/// The vpc-cni node daemon and its operator commands.
#[derive(Debug, Parser)]
#[command(
    name = "ipamd",
    version,
    arg_required_else_help = true,
    // As before clap, a flag given twice takes its last value (install-cni).
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the node daemon (configured by environment variables)
    ///
    /// Every setting is an environment variable (VPC_CNI_*, AWS_VPC_*, the
    /// names aws-node uses; see the README); an invalid value stops ipamd at
    /// start with a message naming it.
    Serve,
    /// Show the pool and pods of the running daemon
    ///
    /// Asks the daemon on VPC_CNI_SOCKET (as root, through the socket).
    Status {
        /// Print the daemon's whole view as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Show how many pods an instance type can hold
    ///
    /// From the embedded table, or from EC2's DescribeInstanceTypes when
    /// VPC_CNI_CLOUD=ec2 is set (falling back to the table).
    MaxPods {
        /// The instance type, e.g. m5.large
        #[arg(long, value_name = "T", value_parser = NonEmptyStringValueParser::new())]
        instance_type: String,
        /// With prefix delegation: a /28 per slot, capped at 110 (under 30 vCPUs) or 250
        #[arg(long)]
        prefix_delegation: bool,
    },
    /// Build a throwaway node on the simulated cloud and wire pods (root)
    ///
    /// Builds a throwaway node (network namespace vpccni-demo-<pid>) running
    /// `ipamd serve` on the simulated cloud, wires six pods with the real
    /// vpc-cni plugin, checks they can talk, shows a default-deny
    /// NetworkPolicy blocking traffic and an allow rule restoring it, shows
    /// the pool, then deletes the pods and removes everything it made, also
    /// on error or Ctrl-C. Needs root and `ip`.
    Demo,
    /// Install the vpc-cni plugin and its conflist on the node (init container)
    InstallCni(InstallCni),
}

/// `ipamd install-cni`'s flags; [`ipamd::install_cni::Options::parse`]
/// applies the defaults and reads the environment.
#[derive(Debug, Args)]
#[command(
    after_help = "Environment: AWS_VPC_ENI_MTU and VPC_CNI_SOCKET (as ipamd serve reads them),
VPC_CNI_PLUGIN_LOG_LEVEL (error|warn|info|debug) and VPC_CNI_PLUGIN_LOG_FILE (absolute path)."
)]
struct InstallCni {
    /// CNI plugin directory (default /opt/cni/bin)
    #[arg(long, value_name = "DIR", value_parser = NonEmptyStringValueParser::new())]
    bin_dir: Option<String>,
    /// CNI configuration directory (default /etc/cni/net.d)
    #[arg(long, value_name = "DIR", value_parser = NonEmptyStringValueParser::new())]
    conf_dir: Option<String>,
    /// The plugin to install (default: vpc-cni beside this ipamd)
    #[arg(long, value_name = "FILE", value_parser = NonEmptyStringValueParser::new())]
    plugin: Option<String>,
    /// Sysctl tree where net/ipv4/ip_forward is set (default /proc/sys)
    #[arg(long, value_name = "DIR", value_parser = NonEmptyStringValueParser::new())]
    proc_sys: Option<String>,
}

impl InstallCni {
    /// The arguments [`ipamd::install_cni::main`] reads, `--flag=value` each.
    fn to_args(&self) -> Vec<String> {
        [
            ("--bin-dir", &self.bin_dir),
            ("--conf-dir", &self.conf_dir),
            ("--plugin", &self.plugin),
            ("--proc-sys", &self.proc_sys),
        ]
        .into_iter()
        .filter_map(|(flag, value)| value.as_ref().map(|v| format!("{flag}={v}")))
        .collect()
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Serve => serve(),
        Cmd::Status { json } => status(json),
        Cmd::MaxPods {
            instance_type,
            prefix_delegation,
        } => max_pods(&instance_type, prefix_delegation),
        Cmd::Demo => demo(),
        Cmd::InstallCni(args) => ipamd::install_cni::main(&args.to_args(), std::env::vars()),
    }
}

/// `ipamd demo` runs the demo, its own binary beside this one (the daemon's
/// image does not need it; a cargo build puts both in one directory).
fn demo() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let demo = match std::env::current_exe() {
        Ok(me) => me.with_file_name("vpc-cni-demo"),
        Err(e) => {
            eprintln!("ipamd demo: cannot find this binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let e = std::process::Command::new(&demo).exec();
    eprintln!(
        "ipamd demo: cannot run {}: {e}; build it with `cargo build --workspace --bins`",
        demo.display()
    );
    ExitCode::FAILURE
}

fn load_config() -> Result<Config, ExitCode> {
    Config::from_env().map_err(|e| {
        eprintln!("ipamd: {e}");
        ExitCode::from(2)
    })
}

fn serve() -> ExitCode {
    let config = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Text => {
            // Colour only on a terminal: a DaemonSet's log is a file.
            use std::io::IsTerminal;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
        }
        LogFormat::Json => {
            // One object per line; the CNI call's span fields (command,
            // namespace, pod, container_id) sit under "span".
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_current_span(true)
                .with_span_list(false)
                .flatten_event(true)
                .init();
        }
    }
    for var in Config::ignored(std::env::vars()) {
        tracing::warn!(%var, "setting is accepted but not implemented in this version; ignored");
    }
    tracing::info!(?config, "starting");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipamd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ipamd::serve(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ipamd failed to start");
            eprintln!("ipamd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

fn status(json: bool) -> ExitCode {
    let config = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let req = Request::for_daemon(Command::Introspect, serde_json::Value::Null);
    let view = match cni_plugin::client::call(&config.socket, &req, Duration::from_secs(5)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ipamd status: {}", e.msg);
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        );
    } else {
        print!("{}", ipamd::status::render_status(&view));
    }
    ExitCode::SUCCESS
}

fn max_pods(name: &str, pd: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipamd max-pods: {e}");
            return ExitCode::FAILURE;
        }
    };
    let online = online_instance_types();
    let resolved = runtime.block_on(ipamd::cloud::limits::resolve(name, online.as_deref()));
    match resolved {
        Ok((l, source)) => {
            if let ipamd::cloud::limits::Source::Table(Some(e)) = source {
                eprintln!("ipamd max-pods: EC2 lookup failed ({e}); using the embedded table");
            }
            println!("{}", l.max_pods_for(pd));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ipamd max-pods: {e}");
            ExitCode::from(2)
        }
    }
}

/// DescribeInstanceTypes through the `ec2` provider, for `max-pods` online:
/// only when `VPC_CNI_CLOUD=ec2` is set explicitly, so a machine without AWS
/// credentials answers from the embedded table without waiting on the SDK's
/// credential chain.
fn online_instance_types() -> Option<Box<dyn ipamd::cloud::limits::InstanceTypes>> {
    (std::env::var("VPC_CNI_CLOUD").as_deref() == Ok("ec2"))
        .then(|| Box::new(ipamd::cloud::ec2::OnlineInstanceTypes) as Box<_>)
}
