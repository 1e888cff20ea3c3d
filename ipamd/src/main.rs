//! `ipamd`: the vpc-cni node daemon and its operator commands.

use std::process::ExitCode;
use std::time::Duration;

use cni_plugin::wire::{Command, Request};
use ipamd::config::{Config, LogFormat};

const USAGE: &str = "usage: ipamd <command>

commands:
  serve                      run the node daemon (configured by environment variables)
  status [--json]            show the pool and pods of the running daemon
  max-pods --instance-type T show how many pods an instance type can hold
  demo                       build a throwaway node on the simulated cloud and wire pods (root)
  install-cni                install the vpc-cni plugin and its conflist on the node (init container)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(),
        Some("status") => status(args.iter().any(|a| a == "--json")),
        Some("max-pods") => max_pods(&args[1..]),
        Some("demo") => ipamd::demo::main(&args[1..]),
        Some("install-cni") => ipamd::install_cni::main(&args[1..], std::env::vars()),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
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
        print!("{}", ipamd::demo::render_status(&view));
    }
    ExitCode::SUCCESS
}

fn max_pods(args: &[String]) -> ExitCode {
    let Some(pos) = args.iter().position(|a| a == "--instance-type") else {
        eprintln!("ipamd max-pods: --instance-type is required");
        return ExitCode::from(2);
    };
    let Some(name) = args.get(pos + 1) else {
        eprintln!("ipamd max-pods: --instance-type needs a value");
        return ExitCode::from(2);
    };
    let pd = args.iter().any(|a| a == "--prefix-delegation");
    if let Some(bad) = args.iter().enumerate().find(|(i, a)| {
        *i != pos + 1 && !matches!(a.as_str(), "--instance-type" | "--prefix-delegation")
    }) {
        eprintln!("ipamd max-pods: unknown argument {:?}", bad.1);
        return ExitCode::from(2);
    }
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
